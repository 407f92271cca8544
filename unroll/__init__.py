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
    wins over the shipped model."""
    import os

    from unroll import pretrained  # keep `import unroll` light: pretrained imports little

    if workdir_or_name in pretrained.NAMES and not os.path.isdir(workdir_or_name):
        return pretrained.load(workdir_or_name)
    from unroll.inference.model import load as _load

    return _load(workdir_or_name, checkpoint)
