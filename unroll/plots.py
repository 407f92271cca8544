"""Pictures: sample grids, PSNR box-plots, training curves, kernels (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from unroll import atomic  # noqa: E402


def _show(ax, image, title):
    image = np.clip(np.asarray(image, np.float32), 0, 1)
    if image.shape[-1] not in (1, 3):  # multispectral: the first three bands as a false-colour view
        image = image[..., :3] if image.shape[-1] > 3 else image[..., :1]
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _psnr(x, y):
    return 10 * np.log10(1.0 / max(float(np.mean((np.clip(x, 0, 1) - y) ** 2)), 1e-12))


def save_figure(fig, path, dpi: int = 110):
    """Write `fig` to `path` (format from its suffix) atomically, then close it."""
    try:
        with atomic.writing(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or None)
    finally:
        plt.close(fig)


def sample_grid(path, blurred, stage_images, sharp, kernel=None, true_kernel=None):
    """blurred | stage 1 ... stage K | sharp, then the estimated and true kernels, with PSNRs."""
    columns = 2 + len(stage_images) + (kernel is not None) + (true_kernel is not None)
    fig, axes = plt.subplots(1, columns, figsize=(2.2 * columns, 2.6))
    _show(axes[0], blurred, f"blurred {_psnr(blurred, sharp):.2f} dB")
    for k, u in enumerate(stage_images):
        _show(axes[1 + k], u, f"stage {k + 1} {_psnr(u, sharp):.2f} dB")
    _show(axes[1 + len(stage_images)], sharp, "sharp")
    col = 2 + len(stage_images)
    for k, title in ((kernel, "estimated kernel"), (true_kernel, "true kernel")):
        if k is not None:
            axes[col].imshow(k, cmap="magma")
            axes[col].set_title(title, fontsize=8)
            axes[col].axis("off")
            col += 1
    fig.tight_layout()
    save_figure(fig, path)


def psnr_boxplot(path, groups: dict):
    """Box-plot of per-image PSNR per group (the paper's Fig. 5): boxes at Q1/median/Q3, 1.5 IQR whiskers."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(groups), 3.2))
    ax.boxplot(list(groups.values()), orientation="horizontal", whis=1.5, flierprops={"marker": "D"})
    ax.set_yticks(range(1, len(groups) + 1), list(groups))
    ax.set_xlabel("PSNR (dB)")
    fig.tight_layout()
    save_figure(fig, path)


def read_log(log_path) -> dict[str, dict[int, float]]:
    """Scalar series {name: {step: value}} of a JSONL log (last value per step wins; {} if absent)."""
    log_path = Path(log_path)
    series: dict[str, dict[int, float]] = {}
    if not log_path.exists():
        return series
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill mid-write
            continue
        if not isinstance(entry, dict) or "step" not in entry:
            continue
        for k, v in entry.items():
            if k != "step" and isinstance(v, (int, float)):
                series.setdefault(k, {})[entry["step"]] = v
    return series


def convergence(path, curves: dict, title: str = "", ylabel: str = "PSNR (dB)"):
    """One curve per variant: {label: {step: value}} (the paper's Fig. 2)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for label, points in curves.items():
        steps = sorted(points)
        ax.plot(steps, [points[s] for s in steps], marker=".", label=str(label))
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def training_curves(log_path, path):
    """Training loss (the mean over each logging interval, `loss_mean`; older logs: `loss`) and the
    evaluation PSNR against step, with the blurred input's PSNR as a dashed reference line."""
    series = read_log(log_path)
    loss_key = "loss_mean" if "loss_mean" in series else "loss"
    panels = [k for k in (loss_key, "eval_psnr") if k in series]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3), squeeze=False)
    for ax, k in zip(axes[0], panels):
        steps = sorted(series[k])
        ax.plot(steps, [series[k][s] for s in steps], marker="." if k == "eval_psnr" else None,
                label="model" if k == "eval_psnr" else None)
        ax.set_xlabel("step")
        if k == "eval_psnr":
            ax.set_ylabel("evaluation PSNR (dB)")
            reference = series.get("eval_psnr_input")
            if reference:
                ax.axhline(np.mean(list(reference.values())), color="gray", linestyle="--",
                           label="blurred input")
            ax.legend(fontsize=8)
        else:
            ax.set_ylabel("training loss (mean per log interval)" if k == "loss_mean" else "loss")
            ax.set_yscale("log")
    fig.tight_layout()
    save_figure(fig, path)


def save_kernel(path, kernel, zoom: int = 8, mark: bool = False):
    """A kernel as a grayscale PNG scaled to its maximum and enlarged `zoom` times (nearest); `mark`
    tags it as written by unroll."""
    from unroll.data.images import save_image

    k = np.asarray(kernel, np.float64)
    k = k / k.max() if k.max() > 0 else k
    save_image(path, np.kron(k, np.ones((zoom, zoom))), mark=mark)
