"""Using trained networks: `load` a checkpoint, deblur images and whole scenes (`deblur`, `tiling`)."""

from unroll.inference.model import Model, image_path, load

__all__ = ["Model", "image_path", "load"]
