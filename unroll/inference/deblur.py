"""Deblurring user images with a trained model: whole images, tiled scenes, GeoTIFF rasters.

`deblur_files(config, workdir, inputs, output_dir, ...)` restores `workdir`'s checkpoint and writes,
for every input `<stem>.<ext>`:
  * `<stem>_deblurred.png` for PNG / JPEG inputs (8-bit), `<stem>_deblurred.tif` for TIFF inputs with
    the input's dtype, value range, layout and tags (GeoTIFF georeferencing, GDAL metadata and
    no-data, ...; see `unroll.raster`), any band count the model takes;
  * `<stem>_kernel.png`: the estimated kernel scaled to its maximum; with tiles, a mosaic of the
    per-tile kernels in the tiles' layout (each scaled to its own maximum).

Modes:
  * `tile_size=0`: the whole image in one forward pass (compiled per image size). A scene whose
    estimated memory (`forward_bytes`) exceeds the available memory is refused with a DataError
    that suggests a `--tile_size`.
  * `tile_size=T`: overlapping T x T tiles blended smoothly (`unroll.tiling`); MGSTNet estimates a
    kernel per tile, which follows a slowly varying blur.
  * `tile_size=T, global_kernel=True`: one blur for the whole scene. MGSTNet's image path can take a
    fixed kernel: every stage's image step (IGDM) and image prior (IPMM) are run with given kernels
    (`image_path`). The kernels (one per stage) are estimated by the full network on the
    `GLOBAL_KERNEL_CROPS` most textured tiles and averaged (an average of nonnegative kernels that
    sum to one is again one), then every tile runs the image path with them. With one crop equal
    to the tile, this is exactly the network's own output (tested).
"""

from __future__ import annotations

import glob
import os
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unroll import data, plots, raster, steps, tiling
from unroll.config import Config, ConfigError
from unroll.models import MGSTNet

GLOBAL_KERNEL_CROPS = 4
# Forward-pass memory per pixel and per feature of the image prior. XLA's buffer assignment
# (`compiled.memory_analysis()`, CPU) measured 12.5-28 bytes for MGSTNet with 1-3 scales, 16-64
# features and 2-3 stages at 128^2 and 256^2 (stage count does not matter: stages run in sequence);
# 32 leaves a margin.
FORWARD_BYTES_PER_PIXEL_FEATURE = 32
MEMORY_FRACTION = 0.8  # use at most this share of the available memory


# ----------------------------------------------------------------------------------------------------
# Inputs and outputs.


def input_files(inputs) -> list[Path]:
    """Image files named by `inputs`: files, folders (searched recursively) or glob patterns."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in data.IMAGE_SUFFIXES
                           and p.is_file() and not p.name.startswith("."))
            if not found:
                raise data.DataError(f"no image files (PNG, JPEG, TIFF) in folder {path}")
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(item)) if Path(p).is_file())
            if not found:
                raise data.DataError(f"input {item} does not exist")
        files.extend(found)
    if not files:
        raise data.DataError("no input images given (--input)")
    return files


def _targets(files: list[Path], output_dir: Path) -> list[tuple[Path, Path, Path]]:
    targets = []
    for path in files:
        suffix = ".tif" if raster.is_tiff(path) else ".png"
        targets.append((path, output_dir / f"{path.stem}_deblurred{suffix}",
                        output_dir / f"{path.stem}_kernel.png"))
    outputs = [t for _, *outs in targets for t in outs]
    if len(set(outputs)) < len(outputs):
        seen = set()
        duplicate = next(t for t in outputs if t in seen or seen.add(t))
        raise data.DataError(f"two inputs would both write {duplicate} (same file name in "
                             "different folders); deblur them into different --output_dir")
    return targets


def _read(path: Path, channels: int):
    """(pixels [H, W, channels], raster or None): TIFFs as rasters (kept for writing back)."""
    if not raster.is_tiff(path):
        return data.load_image(path, channels), None
    try:
        source = raster.read_raster(path)
    except raster.RasterError as exc:
        try:  # e.g. CMYK / YCbCr TIFFs: Pillow converts them to RGB, written as a plain TIFF
            image = data.load_image(path, channels)
        except data.DataError:
            raise data.DataError(str(exc)) from None
        warnings.warn(f"{exc}; deblurring it as a plain image (a 16-bit TIFF without its tags)",
                      raster.RasterWarning, stacklevel=2)
        return image, None
    if source.bands == channels:
        return source.pixels, source
    pixels = data.to_channels(source.pixels, channels, path, source.alpha)  # gray <-> RGB, no alpha
    return pixels, source.with_pixels(pixels)


def _write(out_image: Path, restored: np.ndarray, source):
    restored = np.clip(restored, 0.0, 1.0)
    if source is None:
        data.save_image(out_image, restored)
    else:
        raster.write_raster(out_image, source, restored)


def kernel_mosaic(kernels: np.ndarray) -> np.ndarray:
    """`[rows, cols, k, k]` kernels as one picture, each scaled to its maximum, 1-pixel gaps."""
    rows, cols, kh, kw = kernels.shape
    mosaic = np.zeros((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.float32)
    for i in range(rows):
        for j in range(cols):
            k = kernels[i, j]
            mosaic[i * (kh + 1):i * (kh + 1) + kh, j * (kw + 1):j * (kw + 1) + kw] = (
                k / k.max() if k.max() > 0 else k)
    return mosaic


def _save_kernels(path: Path, kernels: np.ndarray):
    if kernels.ndim == 2:
        plots.save_kernel(path, kernels)
        return
    mosaic = kernel_mosaic(kernels)
    plots.save_kernel(path, mosaic, zoom=max(1, min(8, 2048 // max(mosaic.shape))))


# ----------------------------------------------------------------------------------------------------
# Memory.


def available_memory() -> int:
    """Bytes the computation may use: free device memory on accelerators, else the host's
    available memory (MemAvailable, which counts reclaimable caches; sysconf as a fallback)."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def forward_bytes(config: Config, height: int, width: int) -> int:
    """Estimated memory of one forward pass on an image (see FORWARD_BYTES_PER_PIXEL_FEATURE),
    plus the per-stage images and kernels it returns."""
    pixels = height * width
    return pixels * (FORWARD_BYTES_PER_PIXEL_FEATURE * config.features
                     + 4 * config.channels * (2 * config.stages + 2))


def host_bytes(channels: int, height: int, width: int) -> int:
    """Host arrays of a tiled run: input and output float32, a weight plane, the stored copy."""
    return height * width * (4 * 3 * channels + 4)


def suggest_tile(config: Config, available: int) -> int:
    """A tile size (multiple of 64, 64 to 2048) whose forward pass uses a quarter of `available`."""
    per_pixel = forward_bytes(config, 1, 1)
    side = int((available / 4 / per_pixel) ** 0.5) // 64 * 64
    return int(min(2048, max(64, side)))


def _size(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:.1f} GiB" if nbytes >= 2 ** 30 else f"{nbytes / 2 ** 20:.0f} MiB"


def _check_memory(config: Config, path: Path, height: int, width: int, tile_size: int,
                  available: int):
    budget = MEMORY_FRACTION * available
    scene = host_bytes(config.channels, height, width)
    if scene > budget:
        raise data.DataError(
            f"{path}: {height}x{width} needs {_size(scene)} of host memory even when tiled but "
            f"{_size(available)} are available; split the scene into smaller files")
    side = tile_size if tile_size else None
    model = forward_bytes(config, side or height, side or width)
    if scene + model <= budget:
        return
    if tile_size:
        raise data.DataError(
            f"{path}: tiles of {tile_size}x{tile_size} need about {_size(model)} but "
            f"{_size(available)} are available; use --tile_size="
            f"{min(suggest_tile(config, available), tile_size // 2)}")
    raise data.DataError(
        f"{path}: {height}x{width} is too large to deblur in one piece (about "
        f"{_size(scene + model)}, {_size(available)} available); use "
        f"--tile_size={suggest_tile(config, available)}")


# ----------------------------------------------------------------------------------------------------
# The model: whole images, tiles, and MGSTNet's image path with given kernels.


def image_path(model: MGSTNet, g, stage_kernels):
    """MGSTNet's output image when stage k uses the given kernel h_k (`stage_kernels[k]`,
    [N, k, k]) instead of its own estimate: IGDM (eq. 17) then IPMM (eq. 18) per stage, u_0 = g.

    With the kernels the network itself estimates on `g`, this is exactly `model(g).images[-1]`.
    """
    dtype = g.dtype
    g32 = g.astype(jnp.promote_types(dtype, jnp.float32))
    u = g
    if len(stage_kernels) != model.num_stages:
        raise ValueError(f"expected {model.num_stages} stage kernels, got {len(stage_kernels)}")
    for k, h in enumerate(stage_kernels):
        stage = model.stage(k)
        r = steps.image_step(u.astype(g32.dtype), h.astype(jnp.float32), g32, stage.rho,
                             stage.boundary).astype(dtype)
        u = stage.image_prox(r).astype(dtype)
    return u


class Deblurrer:
    """A restored model and the jitted functions that apply it (one compilation per input shape)."""

    def __init__(self, config: Config, graphdef, params):
        from unroll import train  # the trainer imports JAX-heavy modules; keep this one light

        self.config, self.graphdef, self.params = config, graphdef, params
        self.task = train.TASKS[config.model]
        self.is_mgstnet = isinstance(nnx.merge(graphdef, params), MGSTNet)
        task = self.task
        # Only the image and kernel leave the device (not every stage's intermediates).
        self._predict = jax.jit(lambda p, g: _image_and_kernel(task, nnx.merge(graphdef, p)(g)))
        self._stage_kernels = jax.jit(lambda p, g: tuple(nnx.merge(graphdef, p)(g).kernels))
        self._image_path = jax.jit(lambda p, g, ks: image_path(nnx.merge(graphdef, p), g, ks))

    def predict(self, image):
        """`[1, H, W, C]` -> (restored [1, H, W, C], kernel [1, k, k] or None), on the device."""
        return self._predict(self.params, jnp.asarray(image))

    def global_kernels(self, image: np.ndarray, tile: int, crops: int = GLOBAL_KERNEL_CROPS):
        """Per-stage kernels `[stages][1, k, k]` averaged over the `crops` most textured tiles."""
        totals = None
        positions = tiling.texture_crops(image, tile, crops)
        for top, left in positions:
            crop = jnp.asarray(tiling.crop_tile(image, top, left, tile))
            ks = self._stage_kernels(self.params, crop)
            ks = [np.asarray(k, np.float64) for k in ks]
            totals = ks if totals is None else [t + k for t, k in zip(totals, ks)]
        return tuple(jnp.asarray(t / len(positions), jnp.float32) for t in totals)

    def deblur(self, image: np.ndarray, tile_size: int = 0, tile_overlap: int = 32,
               global_kernel: bool = False, progress: bool = True):
        """`[H, W, C]` -> (restored [H, W, C] float32, kernels: [k, k], [rows, cols, k, k] per tile,
        or None). `tile_size=0`: the whole image at once (`global_kernel` changes nothing there)."""
        if not tile_size:
            restored, kernel = self.predict(image[None])
            return np.asarray(restored[0]), None if kernel is None else np.asarray(kernel[0])
        if global_kernel:
            if not self.is_mgstnet:
                raise ConfigError(f"--global_kernel needs a model whose image path takes a kernel "
                                  f"(mgstnet), not {self.config.model}")
            kernels = self.global_kernels(image, tile_size)
            result = tiling.deblur_tiled(
                lambda t: (self._image_path(self.params, jnp.asarray(t), kernels), None),
                image, tile_size, tile_overlap, progress=progress)
            return result.image, np.asarray(kernels[-1][0])
        result = tiling.deblur_tiled(self.predict, image, tile_size, tile_overlap,
                                     progress=progress)
        return result.image, result.kernels


def _image_and_kernel(task, out):
    return task.image(out), task.kernel(out)


def _check_options(config: Config, tile_size: int, tile_overlap: int):
    if tile_size < 0:
        raise ConfigError(f"--tile_size={tile_size}: must be >= 0 (0: whole images)")
    if tile_size and tile_size < config.kernel_size:
        raise ConfigError(f"--tile_size={tile_size}: must be at least --kernel_size="
                          f"{config.kernel_size}")
    if tile_size and not 0 <= 2 * tile_overlap <= tile_size:
        raise ConfigError(f"--tile_overlap={tile_overlap}: must be between 0 and half of "
                          f"--tile_size={tile_size}")


def _check_input(config: Config, path: Path, tile_size: int, available: int):
    """Header checks before any work: band count, size, memory."""
    info = data.image_info(path)
    if info.bands != config.channels:
        try:
            data.check_bands(path, info.bands, info.alpha, config.channels)
        except data.DataError:
            raise data.DataError(
                f"{path} has {info.bands} bands but the model of this checkpoint takes "
                f"--channels={config.channels}") from None
    if min(info.height, info.width) < config.kernel_size:
        raise data.DataError(f"{path}: image {info.height}x{info.width} is smaller than the "
                             f"{config.kernel_size}x{config.kernel_size} kernel")
    _check_memory(config, path, info.height, info.width, tile_size, available)


def _restore(config: Config, workdir, which: str):
    from unroll import train

    graphdef, params, _ = train.restore_params(config, workdir, which)
    return graphdef, params


def deblur_files(config: Config, workdir, inputs, output_dir, overwrite: bool = False,
                 tile_size: int = 0, tile_overlap: int = 32, global_kernel: bool = False,
                 which: str = "latest") -> list[Path]:
    """Deblur user images with `workdir`'s `which` checkpoint (see the module docstring).

    Every input is checked (bands, size, memory) and existing outputs are refused (unless
    `overwrite`) before the model is restored or anything is written.
    """
    _check_options(config, tile_size, tile_overlap)
    output_dir = Path(output_dir)
    targets = _targets(input_files(inputs), output_dir)
    clashes = [str(t) for _, *outs in targets for t in outs if t.exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{clashes[0]} exists; pass --overwrite or another --output_dir")
    available = available_memory()
    for path, *_ in targets:
        _check_input(config, path, tile_size, available)
    deblurrer = Deblurrer(config, *_restore(config, workdir, which))
    if global_kernel and tile_size and not deblurrer.is_mgstnet:
        raise ConfigError(f"--global_kernel needs a model whose image path takes a kernel "
                          f"(mgstnet), not {config.model}")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, out_image, out_kernel in targets:
        image, source = _read(path, config.channels)
        restored, kernels = deblurrer.deblur(image, tile_size, tile_overlap, global_kernel)
        _write(out_image, restored, source)
        if kernels is not None:
            _save_kernels(out_kernel, kernels)
        written.append(out_image)
        print(f"{path} -> {out_image}", file=sys.stderr)
    return written


__all__ = ["Deblurrer", "available_memory", "deblur_files", "forward_bytes", "image_path",
           "input_files", "kernel_mosaic", "suggest_tile"]
