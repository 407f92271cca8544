"""Data: decoding and rasters, image sources, degradation, the training pipeline and evaluation sets.

Sources (random-access, `len` and `[i]`, usable by `grain.MapDataset.source`):
  * `ImageFolder(root)`: PNG / JPEG / TIFF files found recursively under `root`. When every image
    sits in a first-level subfolder (the WHU-RS19 / AID layout `root/ClassName/img.jpg`), the
    subfolder is the class: `label` is its index in the sorted class names, else `label` is -1.
  * `PairedFolder(root)`: `root/blur/`, `root/sharp/` matched by relative path without suffix, and an
    optional `root/kernels/` of ground-truth kernels `<same stem>.npy`.
  * `builtin_samples(split)`: real photographs bundled inside scikit-image's package directory, read
    straight from that directory with Pillow (never through `skimage.data`'s pooch fetcher, so the
    network is never touched). Fixed split:
      train (10): astronaut, camera, coffee, rocket, brick, grass, gravel, motorcycle_left,
                  hubble_deep_field, ihc (immunohistochemistry micrograph);
      test (3):   chelsea, coins, moon.
    camera, brick, grass, gravel, coins and moon are grayscale; with `channels=3` they are replicated.
  * Several unpaired folders as one: `open_source("builtin,/data/a,/data/b")` (also
    `--train_dir=...`) gives a `sources.ConcatSource`, names prefixed `<index>_<folder name>/`,
    labels -1; `builtin` in the list is the built-in split. A paired folder in a list is an error.

Decoding (`load_image`): TIFF with tifffile (through `unroll.data.raster.read_tiff_array`), everything
else with Pillow; uint8 / 255, uint16 / 65535 (other unsigned ints by their maximum), int8 / int16 by
their dtype range ((x - min) / (max - min), as `unroll.data.raster`'s "dtype" scaling), floats kept as
they are (must lie in [0, 1]). Bands: `channels` may be any count C >= 1 (1 gray and 3 RGB are the
usual; TIFF rasters may hold any number of bands, planar or interleaved). A file with exactly C bands
is used as is. Otherwise only these conversions exist: an alpha band (Pillow's LA / RGBA, a TIFF
ExtraSamples alpha) is dropped, not composited (compositing would invent a background colour that
the scene never had); then, for C = 3, gray is replicated and for C = 1, RGB becomes BT.601 luminance
0.299 R + 0.587 G + 0.114 B. Any other band count (a 5-band scene for an RGB model, RGB + NIR without
an alpha declaration, ...) is a `DataError` naming the file and both counts; the sources check it
from the headers when they are built. EXIF orientation (JPEG, PNG) is applied on reading, as
viewers show the picture; header sizes account for it.

Degradation `g = h * u + n` (paper eq. 1), computed on the host in numpy (`blur_host`, the same
symmetric-boundary convolution as `unroll.ops.blur(..., "symmetric")`, so grain workers never call
JAX): `h` an isotropic Gaussian `kernel_size`^2 with sigma ~ U[sigma_range] or, with probability
`motion_prob`, a random camera-shake kernel (`kernels.motion`), or with probability `shake_prob` one
of `kernels.shake`; `n` white Gaussian noise of std `noise` (or, for training with a `(low, high)`
pair, a std drawn per image from that range); with `quantize`, the result rounded to 8 bits. With `gray_prob`, a
training crop is first made gray (BT.601 luminance replicated over the 3 channels) with that
probability, so an RGB model also sees gray inputs. Without `quantize` the result is NOT clipped to
[0, 1]: the model has no clipping, and keeping it makes
`blurred == ops.blur(sharp, kernel) + n` hold exactly for the recorded kernel. With
`initial_kernels`, each training example also carries "h0" = `kernels.perturb(kernel)`, an initial
kernel that errs as a classical blind estimator does (for warm-started networks).

Memory: sources read image sizes from the file headers up front (cheap validation) and decode pixels
on access; decoded images are cached in memory when the whole set fits in `AUTO_CACHE_BYTES`
(float32), so the built-in set and small folders decode once while AID-sized folders stream.

Bad input raises `DataError` (a `ValueError`) naming the file or folder; with `skip_bad=True` the
problem becomes a `DataWarning` naming the skipped file, but an empty result is still an error.


Modules, in dependency order: `raster` (GeoTIFF / multiband rasters), `images` (decoding, saving,
`DataError`), `sources` (folders, pairs, built-in samples), `degradation` (`blur_host`,
`scale_contrast`, `Degradation`), `pipeline` (`make_train_dataset`), `evalsets` (`make_eval_dataset`).
"""

from unroll.data.degradation import Degradation, blur_host, scale_contrast
from unroll.data.evalsets import EvalSet, example_rng, make_eval_dataset
from unroll.data.images import (
                                IMAGE_SUFFIXES,
                                DataError,
                                DataWarning,
                                ImageInfo,
                                check_bands,
                                decodes_whole,
                                image_info,
                                image_size,
                                load_image,
                                save_image,
                                to_channels,
                                written_by_unroll,
)
from unroll.data.pipeline import TrainTransform, make_train_dataset
from unroll.data.sources import (
                                AUTO_CACHE_BYTES,
                                BUILTIN_TEST,
                                BUILTIN_TRAIN,
                                ImageFolder,
                                PairedFolder,
                                builtin_samples,
                                open_source,
)

__all__ = [
    "AUTO_CACHE_BYTES", "BUILTIN_TEST", "BUILTIN_TRAIN", "DataError", "DataWarning", "Degradation",
    "EvalSet", "IMAGE_SUFFIXES", "ImageFolder", "ImageInfo", "PairedFolder", "TrainTransform",
    "blur_host", "builtin_samples", "check_bands", "decodes_whole", "example_rng", "image_info", "image_size",
    "load_image", "make_eval_dataset", "make_train_dataset", "open_source", "save_image", "scale_contrast",
    "to_channels", "written_by_unroll",
]
