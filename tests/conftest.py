"""Test configuration: simulate two CPU devices (for the sharding tests) before JAX initialises."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
