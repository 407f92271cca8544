"""
Tiled deblurring of a GeoTIFF, one kernel per tile
==================================================

Large scenes are deblurred in overlapping tiles blended smoothly, each tile estimating its own
kernel, so a blur that varies slowly across the scene is followed. This writes a small GeoTIFF
(16-bit, with georeferencing tags) whose left half is blurred less than its right half, deblurs it
as ``python -m experiments.mgstnet --pretrained=aerial --mode=deblur --input=scene.tif
--tile_size=96`` does (``unroll.inference.deblur.deblur_files``), and shows the kernels of the tiles:
narrow on the left, wide on the right. The output keeps the input's dtype and tags.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import tifffile
from skimage import data

import unroll
from unroll import kernels, ops
from unroll.inference import deblur

# A 192x288 scene, sigma 1 on the left and 3 on the right, stored as uint16.
sharp = data.astronaut()[40:232, 100:388].astype(np.float32) / 255
left = np.asarray(ops.blur(sharp[None], kernels.gaussian(15, 1.0)[None]))[0]
right = np.asarray(ops.blur(sharp[None], kernels.gaussian(15, 3.0)[None]))[0]
ramp = np.clip((np.arange(sharp.shape[1]) - 120) / 48, 0, 1)[None, :, None]
scene = np.clip((1 - ramp) * left + ramp * right, 0, 1)

folder = Path(tempfile.mkdtemp())
geo_tags = [(33550, 12, 3, (0.5, 0.5, 0.0), False),                              # ModelPixelScale
            (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4649776.0, 0.0), False)]    # ModelTiepoint
tifffile.imwrite(folder / "scene.tif", np.rint(scene * 65535).astype(np.uint16), photometric="rgb",
                 extratags=geo_tags, metadata=None)

model = unroll.load("aerial")
(written,) = deblur.deblur_files(model, [folder / "scene.tif"], folder / "out", tile_size=96,
                                 tile_overlap=24)
with tifffile.TiffFile(written) as tif:
    restored = tif.asarray()
    print(written.name, restored.dtype, restored.shape, "pixel scale tag kept:",
          tif.pages[0].tags[33550].value)
mosaic = plt.imread(folder / "out" / "scene_kernel.png")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.3), width_ratios=[1.5, 1.5, 1])
axes[0].imshow(scene)
axes[0].set_title("blurred scene (sigma 1 left, 3 right)")
axes[1].imshow(restored / 65535)
axes[1].set_title("restored, 96x96 tiles")
axes[2].imshow(mosaic, cmap="magma")
axes[2].set_title("kernel of each tile")
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()
