"""unroll: blind image deblurring by unrolled optimisation in JAX/Flax."""

__version__ = "0.1.0"
