"""One process of the multi-process test (tests/test_distributed.py): a few train steps of a tiny
MGSTNet on the real data pipeline, parameters saved to an .npz.

    python tests/distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz

With NUM_PROCESSES > 1 the process joins the run at localhost:PORT and feeds its own data shard. With
1 it rebuilds the same global batches by concatenating the shards of a 2-process run in order, so a
single process must reach the same parameters.
"""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 1)
process_id, num_processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

from unroll import train  # noqa: E402
from unroll.models import registry  # noqa: E402
from unroll.train import distributed  # noqa: E402

distributed.initialize(f"localhost:{port}" if num_processes > 1 else "", num_processes if num_processes > 1 else 0,
                       process_id if num_processes > 1 else -1)

import numpy as np  # noqa: E402

from unroll import data  # noqa: E402
from unroll.config import Config  # noqa: E402

STEPS, SHARDS = 3, 2
config = Config(stages=2, scales=1, kernel_rcabs=1, image_rcabs=1, features=4, kernel_features=4,
                kernel_size=5, patch_size=16, batch_size=4, steps=STEPS, learning_rate=1e-3)


def pipeline(index):
    return iter(data.make_train_dataset(None, patch_size=config.patch_size,
                                        batch_size=config.batch_size, kernel_size=config.kernel_size,
                                        seed=config.seed, process_index=index, process_count=SHARDS))


mesh = train.make_mesh()
assert jax.process_count() == num_processes and mesh.size == num_processes
shards = [pipeline(jax.process_index())] if num_processes > 1 else [pipeline(i) for i in range(SHARDS)]
graphdef, params = registry.build_split(config)
tx, _ = train.make_optimizer(config, STEPS, STEPS)
state = train.init_state(params, tx, mesh)
step = train.make_train_step(graphdef, config, tx, mesh)
for _ in range(STEPS):
    parts = [next(it) for it in shards]
    local = {k: np.concatenate([p[k] for p in parts]) for k in ("blurred", "sharp")}
    state, metrics = step(state, train.global_batch(local, mesh))
leaves = jax.tree.leaves(distributed.local_copy(state["params"]))
np.savez(out, *[np.asarray(x) for x in leaves])
print(f"process {jax.process_index()}: loss {float(metrics['loss']):.6f}", flush=True)
