"""Multi-process runs on JAX's own distributed runtime (no home-made coordination).

One process per host (or per GPU); each sees its local devices, JAX joins them into one global device
list, and the trainer's 1-D "data" mesh spans them all. Each process reads its own shard of the data
(`data.make_train_dataset` slices the images by `jax.process_index()`) and contributes its slice of
every global batch (`global_batch`). Orbax writes each checkpoint once, coordinated across the
processes, and a checkpoint restores under any process count: parameters are replicated, and the data
iterator's state is the number of batches consumed, the same on every process.

How to start the processes:
  * explicitly: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on every process;
  * from the environment JAX reads (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID);
  * by cluster auto-detection (SLURM, Open MPI, Kubernetes, Cloud TPU): `--distributed` alone.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               auto: bool = False) -> bool:
    """Join a multi-process run; returns whether one was started.

    Explicit values win; `auto` (or any explicit value) calls `jax.distributed.initialize`, which
    fills the rest from the environment or the cluster's scheduler. With no values and no `auto`,
    this is a single-process run and nothing happens.
    """
    explicit = bool(coordinator_address) or num_processes > 0 or process_id >= 0
    if not (explicit or auto):
        return False
    jax.distributed.initialize(coordinator_address=coordinator_address or None,
                               num_processes=num_processes or None,
                               process_id=process_id if process_id >= 0 else None)
    return True


def is_primary() -> bool:
    """The process that writes files other than checkpoints (reports, logs, pictures)."""
    return jax.process_index() == 0


def local_copy(tree):
    """A replicated global array tree as single-device arrays on this process's first device.

    Evaluation and deblurring run per process on local data; a jit mixing host arrays with arrays
    that span other processes' devices is not allowed, and a local copy avoids any communication.
    """
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def make_mesh(devices=None):
    """1-D mesh "data" over `devices` (default: every device of every process).

    Auto axis type: the model code stays sharding-agnostic and XLA propagates the batch sharding.
    """
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), ("data",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def global_batch(batch: dict, mesh) -> dict:
    """Host-local numpy batch -> global arrays sharded on the batch axis."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items() if isinstance(v, np.ndarray)}
