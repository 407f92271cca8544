"""unroll: blind image deblurring by unrolled optimisation in JAX/Flax.

`unroll.load(workdir)` gives a trained network ready to deblur; the maths (`unroll.ops`,
`unroll.shrinkage`, `unroll.steps`, `unroll.kernels`, `unroll.metrics`), the networks
(`unroll.models`), data (`unroll.data`) and the trainer (`unroll.train`) are subpackages.
"""

__version__ = "0.1.0"


def load(workdir, checkpoint: str = "best"):
    """The network trained in `workdir` (see `unroll.inference.model.load`)."""
    from unroll.inference.model import load as _load  # keep `import unroll` light

    return _load(workdir, checkpoint)
