"""unroll: blind image deblurring by unrolled optimisation in JAX/Flax.

`unroll.load(workdir)` gives a trained network ready to deblur (`unroll.load("aerial")` or
`unroll.load("motion")` one shipped with the package); the maths (`unroll.ops`,
`unroll.shrinkage`, `unroll.steps`, `unroll.kernels`, `unroll.metrics`), the networks
(`unroll.models`), data (`unroll.data`) and the trainer (`unroll.train`) are subpackages.
"""

__version__ = "0.1.0"


def load(workdir_or_name, checkpoint: str = "best"):
    """The network trained in a workdir (see `unroll.inference.model.load`), or a model shipped with
    the package by name (`"aerial"`, `"motion"`: see `unroll.pretrained`). A directory of that name
    wins over the shipped model. Its `deblur(image)` gives `(restored, kernel)`.

    >>> import numpy as np, unroll
    >>> model = unroll.load("motion")
    >>> restored, kernel = model.deblur(np.full((40, 48), 128, np.uint8))  # gray uint8 in, out
    >>> restored.shape, restored.dtype, kernel.shape
    ((40, 48), dtype('uint8'), (31, 31))
    >>> unroll.load("nosuch")
    Traceback (most recent call last):
    ...
    unroll.pretrained.PretrainedError: 'nosuch' is not a folder, nor a model shipped with unroll (aerial, motion)
    """
    import os

    from unroll import pretrained  # keep `import unroll` light: pretrained imports little

    if workdir_or_name in pretrained.NAMES and not os.path.isdir(workdir_or_name):
        return pretrained.load(workdir_or_name)
    if not os.path.isdir(workdir_or_name):
        raise pretrained.PretrainedError(f"{str(workdir_or_name)!r} is not a folder, nor a model "
                                         f"shipped with unroll ({', '.join(pretrained.NAMES)})")
    from unroll.inference.model import load as _load

    return _load(workdir_or_name, checkpoint)
