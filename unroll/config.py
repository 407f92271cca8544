"""One configuration for training, evaluation and deblurring; the command-line flags mirror it.

Every field is a flag of `experiments.mgstnet` (same name, same default). `validate` checks the
values up front and raises `ConfigError` naming the flag, so a bad run fails before any work.
"""

from __future__ import annotations

import dataclasses
import math


class ConfigError(ValueError):
    """A flag value that cannot work; the message names the flag."""


# The built-in models; `unroll.models.registry.register` adds more, and validation asks the registry.
MODELS = ("mgstnet", "madn", "idc", "mtwdn")
KERNEL_INITS = ("uniform", "classical")  # h_0: the paper's flat kernel, or unroll.classical's estimate


@dataclasses.dataclass
class Config:
    # Model (MGSTNet, paper Section II; defaults are the paper's configuration). The CNN baselines
    # use `features` (their first-level width), `scales` and `channels`.
    model: str = "mgstnet"
    stages: int = 3
    scales: int = 3
    kernel_rcabs: int = 2
    image_rcabs: int = 2
    features: int = 64
    kernel_features: int = 32
    kernel_size: int = 15
    channels: int = 3
    threshold: str = "gst"
    gst_grad: str = "unrolled"
    gst_solver: str = "fixed_point"
    kernel_prox: bool = True
    image_prior: str = "paper"  # IPMM: the paper's, or unroll.models.priors' unet / haar_gst
    boundary: str = "symmetric"
    remat: bool = False
    stage_unroll: int = 1
    # Beyond the paper (issue 29): the image update (IGDM's gradient step, or the data term solved
    # in closed form) and h_0 (the paper's uniform kernel, or the classical blind solver's estimate
    # at inference, trained on perturbed true kernels).
    image_step: str = "gradient"
    kernel_init: str = "uniform"
    image_init: str = "blurred"  # u_0: g (the paper's) or g restored with h_0 (unroll.nonblind)
    kernel_bank: int = 0  # > 0: train from that many real classical estimates (unroll.classical.bank)
    # Beyond the paper (issue 34): step sizes and thresholds as learned functions of the noise level,
    # which the network estimates (unroll.noise) or is given (deblur(..., noise=)).
    noise_conditional: bool = False

    # Data (Section III-A). Empty folders mean the built-in samples.
    train_dir: str = ""
    test_dir: str = ""
    patch_size: int = 256
    sigma_min: float = 0.2
    sigma_max: float = 4.0
    noise: float = 0.0
    noise_max: float = 0.0  # > 0: each training image's noise std ~ U[noise, noise_max]
    noise_power: float = 1.0  # std = noise + (noise_max - noise) * U[0, 1] ** noise_power
    motion_prob: float = 0.0
    shake_prob: float = 0.0  # probability of a kernels.shake kernel (Gaussian: 1 - motion - shake)
    quantize: bool = False  # round the blurred images to 8 bits
    gray_prob: float = 0.0  # fraction of training crops made gray (RGB models)
    contrast_min: float = 1.0  # < 1: each training crop's contrast scaled by U[contrast_min, 1]
    init_from: str = ""  # fine-tuning: start from a shipped model's or a workdir's weights
    eval_crop: int = 0
    eval_contrast: float = 1.0  # < 1: test scenes made fainter (contrast scaled) before blurring
    num_workers: int = 0

    # Optimisation: Adam, lr `learning_rate`, then `final_learning_rate` for the last
    # `final_lr_epochs` epochs (epoch budget) or `final_lr_steps` steps (step budget).
    batch_size: int = 8
    steps: int = 0
    epochs: int = 0
    learning_rate: float = 1e-4
    final_learning_rate: float = 1e-5
    final_lr_epochs: int = 10
    final_lr_steps: int = 0
    alpha: float = 0.05
    grad_clip: float = 0.0
    bf16: bool = False
    seed: int = 0

    # Bookkeeping.
    log_every: int = 20
    save_every: int = 200
    eval_every: int = 0
    keep: int = 3
    num_samples: int = 3

    def validate(self) -> "Config":
        from unroll.models import registry
        from unroll.models.mgstnet import GST_GRADS, GST_SOLVERS, IMAGE_INITS, IMAGE_STEPS, THRESHOLDS
        from unroll.models.priors import IMAGE_PRIORS
        from unroll.ops import BOUNDARIES

        def need(ok, flag, message):
            if not ok:
                raise ConfigError(f"--{flag}={getattr(self, flag)!r}: {message}")

        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float):
                need(math.isfinite(value), field.name, "must be a finite number")
        need(self.model in registry.MODELS, "model", f"must be one of {', '.join(registry.MODELS)} "
             "(unroll.models.registry.register adds a model)")
        need(self.stages >= 1, "stages", "must be at least 1")
        need(1 <= self.scales <= 3, "scales", "must be 1, 2 or 3")
        need(self.kernel_rcabs >= 0, "kernel_rcabs", "must be >= 0")
        need(self.image_rcabs >= 0, "image_rcabs", "must be >= 0")
        need(self.features >= 1, "features", "must be positive")
        need(self.kernel_features >= 1, "kernel_features", "must be positive")
        need(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "kernel_size", "must be a positive odd number")
        need(self.channels >= 1, "channels", "must be >= 1 (1 grayscale, 3 RGB, any for multiband TIFF)")
        need(self.threshold in THRESHOLDS, "threshold", f"must be one of {', '.join(THRESHOLDS)}")
        need(self.gst_grad in GST_GRADS, "gst_grad", f"must be one of {', '.join(GST_GRADS)}")
        need(self.gst_solver in GST_SOLVERS, "gst_solver", f"must be one of {', '.join(GST_SOLVERS)}")
        need(self.image_prior in IMAGE_PRIORS, "image_prior", f"must be one of {', '.join(IMAGE_PRIORS)}")
        need(self.boundary in BOUNDARIES, "boundary", f"must be one of {', '.join(BOUNDARIES)}")
        need(self.image_step in IMAGE_STEPS, "image_step", f"must be one of {', '.join(IMAGE_STEPS)}")
        need(self.kernel_init in KERNEL_INITS, "kernel_init", f"must be one of {', '.join(KERNEL_INITS)}")
        need(self.image_init in IMAGE_INITS, "image_init", f"must be one of {', '.join(IMAGE_INITS)}")
        need(self.image_init == "blurred" or self.kernel_init == "classical", "image_init",
             "nonblind restores g with h_0: it needs --kernel_init=classical (the uniform h_0 is no blur "
             "estimate)")
        need(self.kernel_bank >= 0, "kernel_bank", "must be >= 0 (0: perturbed true kernels)")
        need(self.kernel_bank == 0 or self.kernel_init == "classical", "kernel_bank",
             "holds initial kernels for --kernel_init=classical")
        need(not self.noise_conditional or self.model == "mgstnet", "noise_conditional",
             f"is a variant of mgstnet, not of --model={self.model}")
        need(self.kernel_init == "uniform" or self.model == "mgstnet", "kernel_init",
             "an initial kernel needs a model that estimates kernels (--model=mgstnet)")
        need(self.stage_unroll >= 0, "stage_unroll", "must be 0 (all stages) or positive")
        need(not self.remat or self.stage_unroll == 1, "stage_unroll",
             "must be 1 with --remat (remat needs the rolled stage loop)")
        need(self.patch_size >= self.kernel_size, "patch_size", f"must be >= --kernel_size={self.kernel_size}")
        need(self.patch_size % 2 ** (self.scales - 1) == 0, "patch_size",
             f"must be a multiple of {2 ** (self.scales - 1)} for {self.scales} scales")
        need(0 <= self.sigma_min <= self.sigma_max and self.sigma_max > 0, "sigma_max",
             f"need 0 <= --sigma_min={self.sigma_min} <= --sigma_max, and --sigma_max > 0")
        need(self.noise >= 0, "noise", "must be >= 0")
        need(self.noise_max == 0 or self.noise_max >= self.noise, "noise_max",
             f"must be 0 (fixed noise) or >= --noise={self.noise}")
        need(self.noise_power > 0, "noise_power", "must be > 0 (1: uniform; 2: more low noise)")
        need(0 <= self.motion_prob <= 1, "motion_prob", "must be in [0, 1]")
        need(0 <= self.shake_prob <= 1 and self.motion_prob + self.shake_prob <= 1 + 1e-9, "shake_prob",
             f"must be in [0, 1] with --motion_prob={self.motion_prob} + --shake_prob <= 1")
        need(0 <= self.gray_prob <= 1, "gray_prob", "must be in [0, 1]")
        need(self.gray_prob == 0 or self.channels == 3, "gray_prob",
             f"needs --channels=3 (RGB crops made gray), got --channels={self.channels}")
        need(0 < self.contrast_min <= 1, "contrast_min", "must be in (0, 1] (1: crops as they are)")
        need(0 < self.eval_contrast <= 1, "eval_contrast", "must be in (0, 1] (1: scenes as they are)")
        need(self.eval_crop == 0 or self.eval_crop >= self.kernel_size, "eval_crop",
             f"must be 0 (whole images) or >= --kernel_size={self.kernel_size}")
        need(self.num_workers >= 0, "num_workers", "must be >= 0")
        need(self.batch_size >= 1, "batch_size", "must be positive")
        need(self.steps >= 0 and self.epochs >= 0, "steps", "--steps and --epochs must be >= 0")
        need((self.steps > 0) != (self.epochs > 0), "steps", "give exactly one of --steps and --epochs")
        need(self.learning_rate > 0 and self.final_learning_rate > 0, "learning_rate", "must be positive")
        need(self.final_lr_epochs >= 0 and self.final_lr_steps >= 0, "final_lr_epochs", "must be >= 0")
        need(self.alpha >= 0, "alpha", "must be >= 0")
        need(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 = no clipping)")
        need(self.seed >= 0, "seed", "must be >= 0")
        for flag in ("log_every", "save_every", "keep"):
            need(getattr(self, flag) >= 1, flag, "must be at least 1")
        need(self.eval_every >= 0 and self.num_samples >= 0, "eval_every", "must be >= 0")
        return self

    # Fields that define the network: a checkpoint only fits a run with the same values. A saved
    # configuration without a field gets its default (`image_prior`: "paper", as before it existed).
    MODEL_FIELDS = ("model", "stages", "scales", "kernel_rcabs", "image_rcabs", "features",
                    "kernel_features", "kernel_size", "channels", "threshold", "kernel_prox", "boundary",
                    "image_prior", "image_step", "noise_conditional", "image_init")
    BASELINE_FIELDS = ("model", "scales", "features", "channels")

    def model_signature(self) -> dict:
        """The fields that define the network: MODEL_FIELDS for MGSTNet and for a registered model
        (which may read any of them), BASELINE_FIELDS for the CNN baselines."""
        baseline = self.model in MODELS and self.model != "mgstnet"
        names = self.BASELINE_FIELDS if baseline else self.MODEL_FIELDS
        return {name: getattr(self, name) for name in names}

    def steps_per_epoch(self, num_train: int, process_count: int = 1) -> int:
        per_process = num_train // process_count
        return max(1, per_process // (self.batch_size // process_count))

    def schedule(self, num_train: int, process_count: int = 1) -> tuple[int, int]:
        """(total steps, step at which the learning rate drops to `final_learning_rate`)."""
        if self.steps:
            return self.steps, max(0, self.steps - self.final_lr_steps)
        per_epoch = self.steps_per_epoch(num_train, process_count)
        total = self.epochs * per_epoch
        return total, max(0, (self.epochs - self.final_lr_epochs) * per_epoch)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

