"""The one trainer: configuration in (`unroll.config.Config`), checkpoints, logs and metrics out.

Modules, in dependency order: `tasks` (each model's loss; MADN's adversarial part), `state` (the
training state and its optimiser), `distributed` (processes, the device mesh, global batches),
`steps` (jit-compiled train and predict steps), `adversarial` (the GAN step), `logs`, `evaluation`,
`loop` (`train_and_evaluate`, `finished_or_train`, `evaluate_checkpoint`).
"""

from unroll.train.distributed import global_batch, make_mesh
from unroll.train.evaluation import evaluate, evaluate_noise_levels, make_eval_set
from unroll.train.loop import evaluate_checkpoint, finished_or_train, train_and_evaluate
from unroll.train.state import init_state, make_optimizer, split_discriminator
from unroll.train.steps import LOOP_MODES, compile_seconds, make_predict, make_train_step
from unroll.train.tasks import TASKS, task_of

__all__ = ["LOOP_MODES", "TASKS", "compile_seconds", "evaluate", "evaluate_checkpoint", "evaluate_noise_levels",
           "finished_or_train", "global_batch", "init_state", "make_eval_set", "make_mesh", "make_optimizer",
           "make_predict", "make_train_step", "split_discriminator", "task_of", "train_and_evaluate"]
