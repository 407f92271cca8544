"""Flax NNX models: MGSTNet (unrolled, paper Section II) and shared blocks for the CNN baselines."""

from unroll.models.mgstnet import MGSTNet, MGSTNetOutput

__all__ = ["MGSTNet", "MGSTNetOutput"]
