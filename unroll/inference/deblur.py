"""Deblurring user images with a trained model: whole images, tiled scenes, GeoTIFF rasters.

`deblur_files(model, inputs, output_dir, ...)` deblurs with a loaded model (`unroll.load`) and writes,
for every input `<stem>.<ext>`:
  * `<stem>_deblurred.png` for PNG / JPEG inputs (8-bit), `<stem>_deblurred.tif` for TIFF inputs with
    the input's dtype, value range, layout and tags (GeoTIFF georeferencing, GDAL metadata and
    no-data, ...; see `unroll.data.raster`), any band count the model takes;
  * `<stem>_kernel.png`: the estimated kernel scaled to its maximum; with tiles, a mosaic of the
    per-tile kernels in the tiles' layout (each scaled to its own maximum).

Nothing a user had is replaced: an output name that equals an input is refused, an existing file
is replaced only if unroll wrote it (its Software tag or PNG text, see
`unroll.data.written_by_unroll`), and folders and globs never yield unroll's own outputs as inputs.
An alpha band (PNG, TIFF) is passed through unchanged; EXIF orientation is applied on reading.

A job that survives: every output is written to a temporary name and renamed into place when
complete (`unroll.atomic`), so a kill leaves no half-written file; rerunning the same command
finishes the job: inputs whose outputs unroll wrote completely are kept and skipped (a note says how
many; `overwrite` redoes them), the rest are made, and temporaries a killed run left are removed.
One process writes into an output folder at a time (a lock, as training holds on its workdir): a
second is refused at once, naming the first. A full disk or an unwritable folder is one
`unroll.atomic.WriteError` line naming the folder and its free space; outputs finished before it stay.

Modes:
  * `tile_size=0`: the whole image in one forward pass (compiled per image size). A scene whose
    estimated memory (`forward_bytes`) exceeds the available memory is tiled automatically (a note
    on stderr names the tile size).
  * `tile_size=T`: overlapping T x T tiles blended smoothly (`unroll.inference.tiling`); MGSTNet estimates a
    kernel per tile, which follows a slowly varying blur.
  * `tile_size=T, global_kernel=True`: one blur for the whole scene. MGSTNet's image path can take a
    fixed kernel: every stage's image step (IGDM) and image prior (IPMM) are run with given kernels
    (`unroll.inference.model.image_path`). The kernels (one per stage) are estimated by the full network on the
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
import numpy as np

from unroll import atomic, data, plots
from unroll.config import Config, ConfigError
from unroll.data import raster
from unroll.inference import tiling
from unroll.inference.model import Model, check_noise_value, scene_noise
from unroll.models import registry

# Forward-pass memory per pixel and per feature of the image prior. XLA's buffer assignment
# (`compiled.memory_analysis()`, CPU) measured 12.5-28 bytes for MGSTNet with 1-3 scales, 16-64
# features and 2-3 stages at 128^2 and 256^2 (stage count does not matter: stages run in sequence);
# 32 leaves a margin.
FORWARD_BYTES_PER_PIXEL_FEATURE = 32
MEMORY_FRACTION = 0.8  # use at most this share of the available memory


# ----------------------------------------------------------------------------------------------------
# Inputs and outputs.


def input_files(inputs) -> list[Path]:
    """Image files named by `inputs`: files, folders (searched recursively) or glob patterns.

    Folders and globs skip the files unroll wrote itself (earlier outputs), with a note; a file named
    explicitly is taken as it is.
    """
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files.append(path)
            continue
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in data.IMAGE_SUFFIXES
                           and p.is_file() and not p.name.startswith("."))
            if not found:
                raise data.DataError(f"no image files (PNG, JPEG, TIFF) in folder {path}")
        else:
            found = sorted(Path(p) for p in glob.glob(str(item)) if Path(p).is_file())
            if not found:
                raise data.DataError(f"input {item} does not exist")
        ours = [p for p in found if data.written_by_unroll(p)]
        if ours:
            print(f"note: skipping {len(ours)} file(s) under {item} that unroll wrote (earlier "
                  f"outputs), e.g. {ours[0]}", file=sys.stderr)
        files.extend(p for p in found if p not in ours)
    if not files:
        raise data.DataError("no input images given (--input)")
    return list(dict.fromkeys(files))


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
    inputs = {p.resolve() for p in files}
    for output in outputs:
        if output.resolve() in inputs:
            raise data.DataError(f"the output {output} would replace an input of the same name; "
                                 "choose another --output_dir")
    return targets


def _plan(targets, overwrite: bool, with_kernel: bool):
    """(the targets to make, how many are finished): an input is finished when unroll wrote its
    outputs (the kernel too, for a model that estimates one) and they decode to their end; it is
    kept unless `overwrite`. A file unroll did not write where an output goes is refused."""
    todo, finished = [], 0
    for target in targets:
        _, *outs = target
        for out in outs:
            if out.exists() and not data.written_by_unroll(out):
                raise FileExistsError(f"{out} exists and was not written by unroll; it is not "
                                      "replaced, even with --overwrite: choose another --output_dir")
        wanted = outs if with_kernel else outs[:1]
        if not overwrite and all(out.exists() and data.decodes_whole(out) for out in wanted):
            finished += 1
        else:
            todo.append(target)
    return todo, finished


def _read(path: Path, channels: int):
    """(pixels [H, W, channels], raster, PNG alpha or None): TIFFs as rasters (kept for writing
    back); other files' alpha band kept apart to be passed through."""
    if not raster.is_tiff(path):  # decoded once; the alpha band is kept apart
        stored, alpha = data.images.load_stored(path)
        if stored.ndim == 2 or stored.shape[-1] == 1 + alpha:  # gray: Model.deblur gives gray back
            channels = 1
        image = data.images.stored_to_float(stored, path, channels, alpha)
        return image, None, (data.images.stored_to_float(stored[..., -1:], path, 1, False)[..., 0]
                             if alpha else None)
    try:
        source = raster.read_raster(path)
    except raster.RasterError as exc:
        try:  # e.g. CMYK / YCbCr TIFFs: Pillow converts them to RGB, written as a plain TIFF
            image = data.load_image(path, channels)
        except data.DataError:
            raise data.DataError(str(exc)) from None
        warnings.warn(f"{exc}; deblurring it as a plain image (a 16-bit TIFF without its tags)",
                      raster.RasterWarning, stacklevel=2)
        return image, None, None
    if source.bands == channels or source.bands == 1:  # one band: Model.deblur gives one back
        return source.pixels, source, None
    if source.alpha and source.bands == channels + 1:  # the alpha band goes back out unchanged
        return source.pixels[..., :-1], source, source.pixels[..., -1]
    pixels = data.to_channels(source.pixels, channels, path, source.alpha)  # gray <-> RGB, no alpha
    return pixels, source.with_pixels(pixels), None


def _write(out_image: Path, restored: np.ndarray, source, alpha=None):
    restored = np.clip(restored, 0.0, 1.0)
    if alpha is not None:
        restored = np.concatenate([restored, alpha[:, :, None]], axis=-1)
    if source is not None:
        raster.write_raster(out_image, source, restored, software=data.images.SOFTWARE)
        return
    data.save_image(out_image, restored, mark=True)


def _windows(path: Path, channels: int):
    """(float32 windows of the input, lazy raster or None, stored samples, alpha flag) for tiled
    deblurring that never holds a float copy of the scene; None where only the whole-image reader
    applies (TIFFs that are planar, need a band conversion or Pillow's decoding)."""
    if raster.is_tiff(path):
        try:
            source = raster.read_raster(path, lazy=True)
        except raster.RasterError:
            return None
        if source.bands != channels or (source.planar and source.bands > 1):
            return None
        return source.pixels, source, None, False
    stored, alpha = data.images.load_stored(path)
    windows = tiling.ImageWindows(
        stored, lambda w: data.images.stored_to_float(w, path, channels, alpha), channels)
    return windows, None, stored, alpha


def _windows_supported(path: Path, channels: int) -> bool:
    """Whether `_windows` can read `path` (from the header: TIFF band count and layout)."""
    if not raster.is_tiff(path):
        return True
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.samplesperpixel > 1
            plain = page.photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
            return plain and not planar and page.colormap is None and page.samplesperpixel == channels
    except Exception:  # noqa: BLE001 - the whole-image reader reports it
        return False


def _deblur_streamed(model: Model, path: Path, out_image: Path, tile: int, overlap: int,
                     global_kernel: bool, noise: float | None):
    """Tiled deblurring from stored samples to the output file, a band of tile rows at a time:
    the host holds the stored input, one band, and (PNG output) the 8-bit result. Returns
    (kernels, the noise used): `noise`, or the scene's estimate when None."""
    opened = _windows(path, model.config.channels)
    if opened is None:
        return NotImplemented
    windows, source, stored, alpha = opened
    noise = scene_noise(windows) if noise is None else noise
    tile = tiling.fit_tile(windows.shape[:2], tile, overlap)  # as Model.deblur: as many tiles, smaller
    predict_tile, global_k = model.tile_predictor(windows, tile, global_kernel, noise)
    kernels: list = []
    bands = tiling.tiled_bands(predict_tile, windows, tile, overlap, progress=True, kernels=kernels)
    if source is not None:
        raster.write_raster_bands(out_image, source, bands, software=data.images.SOFTWARE)
    else:
        height, width, channels = windows.shape
        out = np.empty((height, width, channels + int(alpha)), np.uint8)
        for top, block in bands:
            rows = slice(top, top + len(block))
            out[rows, :, :channels] = np.rint(np.clip(block, 0.0, 1.0) * 255)
            if alpha:
                a = data.images.stored_to_float(stored[rows][..., -1:], path, 1, False)
                out[rows, :, channels] = np.rint(a[..., 0] * 255)
        data.save_image(out_image, out, mark=True)
    if global_k is not None:
        return global_k, noise
    rows = tiling.tile_positions(windows.shape[0], tile, overlap)
    if kernels[0] is None:
        return None, noise
    return np.stack(kernels).reshape(len(rows), -1, *kernels[0].shape), noise


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
        plots.save_kernel(path, kernels, mark=True)
        return
    mosaic = kernel_mosaic(kernels)
    plots.save_kernel(path, mosaic, zoom=max(1, min(8, 2048 // max(mosaic.shape))), mark=True)


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
                  available: int) -> int:
    """The tile size to use for this image (0: whole): `tile_size`, or one chosen automatically when
    the whole image does not fit in memory; DataError when even tiles do not fit."""
    budget = MEMORY_FRACTION * available
    scene = host_bytes(config.channels, height, width)
    if scene > budget:
        raise data.DataError(
            f"{path}: {height}x{width} needs {_size(scene)} of host memory even when tiled but "
            f"{_size(available)} are available; split the scene into smaller files")
    side = tile_size if tile_size else None
    model = forward_bytes(config, side or height, side or width)
    if scene + model <= budget:
        return tile_size
    if tile_size:
        raise data.DataError(
            f"{path}: tiles of {tile_size}x{tile_size} need about {_size(model)} but "
            f"{_size(available)} are available; use --tile_size="
            f"{min(suggest_tile(config, available), tile_size // 2)}")
    tile = suggest_tile(config, available)
    if scene + forward_bytes(config, tile, tile) > budget:
        raise data.DataError(f"{path}: {height}x{width} does not fit in {_size(available)} of memory "
                             "even in tiles; split the scene into smaller files")
    print(f"note: {path} ({height}x{width}, about {_size(scene + model)} in one piece, "
          f"{_size(available)} available) is deblurred in {tile}x{tile} tiles", file=sys.stderr)
    return tile


def _check_options(config: Config, tile_size: int, tile_overlap: int):
    if tile_size < 0:
        raise ConfigError(f"--tile_size={tile_size}: must be >= 0 (0: whole images)")
    if tile_size and tile_size < config.kernel_size:
        raise ConfigError(f"--tile_size={tile_size}: must be at least --kernel_size="
                          f"{config.kernel_size}")
    if tile_size and not 0 <= 2 * tile_overlap <= tile_size:
        raise ConfigError(f"--tile_overlap={tile_overlap}: must be between 0 and half of "
                          f"--tile_size={tile_size}")


def _check_input(config: Config, path: Path, tile_size: int, available: int) -> int:
    """Header checks before any work: band count, size, memory; returns the tile size to use."""
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
    return _check_memory(config, path, info.height, info.width, tile_size, available)


def deblur_files(model: Model, inputs, output_dir, overwrite: bool = False, tile_size: int = 0,
                 tile_overlap: int = 32, global_kernel: bool = False,
                 noise: float | None = None) -> list[Path]:
    """Deblur user images with a loaded `model` (`unroll.load`; see the module docstring).

    `noise`: the inputs' noise std on the [0, 1] scale, or None to estimate it per input
    (`unroll.noise`); see `Model.deblur`. Each input's line names the noise used and warns when it
    lies outside the model's training range.

    Every input is checked (bands, size, memory) and the outputs are checked (see the module
    docstring) before anything is computed or written. Returns every input's deblurred image,
    those kept from an earlier run included.
    """
    config = model.config
    _check_options(config, tile_size, tile_overlap)
    noise = check_noise_value(noise)
    output_dir = Path(output_dir)
    targets = _targets(input_files(inputs), output_dir)
    available = available_memory()
    tiles = dict(zip(targets, (_check_input(config, path, tile_size, available)
                               for path, *_ in targets)))
    if global_kernel and tile_size and not model.is_mgstnet:
        raise ConfigError(f"--global_kernel needs a model whose image path takes a kernel "
                          f"(mgstnet), not {config.model}")
    with atomic.exclusive(output_dir, "--output_dir"):
        removed = atomic.clean(output_dir)
        if removed:
            print(f"note: removed {removed} unfinished temporary file(s) that a killed run left in "
                  f"{output_dir}", file=sys.stderr)
        todo, finished = _plan(targets, overwrite, registry.spec(config).estimates_kernel)
        if finished:
            print(f"note: {finished} of {len(targets)} input(s) already have complete outputs from an "
                  f"earlier run in {output_dir}: kept (--overwrite redoes them)", file=sys.stderr)
        done = 0
        for target in todo:
            try:
                _deblur_one(model, *target, tiles[target], tile_overlap, global_kernel, noise)
            except atomic.WriteError as exc:
                raise atomic.WriteError(f"{exc}; the {finished + done} input(s) finished before it "
                                        "are kept: rerun the command to finish") from None
            done += 1
    return [out_image for _, out_image, _ in targets]


def _deblur_one(model: Model, path: Path, out_image: Path, out_kernel: Path, tile: int,
                tile_overlap: int, global_kernel: bool, noise: float | None):
    """Deblur one input and write its outputs (each atomically; the kernel after the image); one
    line on stderr names them with the noise std used (given, or estimated on the scene) and, when
    it lies outside the model's training range, a warning (`Model.check_noise`)."""
    config = model.config
    overlap = min(tile_overlap, tile // 2)
    given = noise is not None
    result = NotImplemented
    if tile and _windows_supported(path, config.channels):
        result = _deblur_streamed(model, path, out_image, tile, overlap, global_kernel, noise)
    if result is NotImplemented:
        image, source, alpha = _read(path, config.channels)
        noise = scene_noise(image) if noise is None else noise
        restored, kernels = model.deblur(image, tile, overlap, global_kernel and bool(tile),
                                         progress=True, noise=noise)
        _write(out_image, restored, source, alpha)
    else:
        kernels, noise = result
    if kernels is not None:
        _save_kernels(out_kernel, kernels)
    warning = model.check_noise(noise)
    print(f"{path}: noise {noise:.4f} ({'given' if given else 'estimated'}) -> {out_image}"
          + (f"; warning: {warning}" if warning else ""), file=sys.stderr)


__all__ = ["available_memory", "deblur_files", "forward_bytes", "input_files", "kernel_mosaic",
           "suggest_tile"]
