"""Parameter count of an MGSTNet configuration, from an abstract initialisation (nothing allocated).

    python -m experiments.param_count --stages=3 --scales=3 --kernel_rcabs=2 --image_rcabs=2

Prints the total and its split over the parts of one stage (all stages have the same structure).
"""

from __future__ import annotations

import jax
from absl import app, flags
from flax import nnx

from unroll.models import MGSTNet

flags.DEFINE_integer("stages", 3, "unrolled stages K", lower_bound=1)
flags.DEFINE_integer("scales", 3, "scales of the image prior's encoder-decoder", lower_bound=1)
flags.DEFINE_integer("kernel_rcabs", 2, "RCABs in G and in G~ (kernel prior)", lower_bound=0)
flags.DEFINE_integer("image_rcabs", 2, "RCABs per encoder/decoder level of F and F~", lower_bound=0)
flags.DEFINE_integer("channels", 3, "image channels (3 RGB, 1 grayscale)", lower_bound=1)
flags.DEFINE_integer("kernel_size", 15, "estimated kernel size (odd)", lower_bound=1)
flags.DEFINE_integer("features", 64, "finest-scale width of the image prior", lower_bound=1)
flags.DEFINE_integer("kernel_features", 32, "width of the kernel prior", lower_bound=1)
flags.DEFINE_integer("reduction", 16, "RCAB channel-attention reduction ratio", lower_bound=1)
flags.DEFINE_enum("threshold", "gst", ["gst", "soft"], "shrinkage of the image prior features")
flags.DEFINE_bool("kernel_prox", True, "with the kernel proximal module (KPM)")
flags.register_validator("kernel_size", lambda k: k % 2 == 1, message="--kernel_size must be odd")

FLAGS = flags.FLAGS


def count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(tree, nnx.Param)))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        model = nnx.eval_shape(lambda: MGSTNet(
            stages=FLAGS.stages, scales=FLAGS.scales, kernel_rcabs=FLAGS.kernel_rcabs,
            image_rcabs=FLAGS.image_rcabs, channels=FLAGS.channels, kernel_size=FLAGS.kernel_size,
            features=FLAGS.features, kernel_features=FLAGS.kernel_features,
            reduction=FLAGS.reduction, threshold=FLAGS.threshold, kernel_prox=FLAGS.kernel_prox))
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    total = count(model)
    stage = model.stages  # all stages, parameters stacked on a leading axis
    per_stage = lambda module: count(module) // model.num_stages  # noqa: E731
    print(f"MGSTNet parameters: {total:,} ({total / 1e6:.2f}M)")
    print(f"  per stage: {per_stage(stage):,}")
    if stage.kernel_prox is not None:
        print(f"    kernel prox (KPM, G and G~): {per_stage(stage.kernel_prox):,}")
    prox = stage.image_prox
    print(f"    image prox (IPMM): {per_stage(prox):,}"
          f" = F {per_stage(prox.extractor):,} + F~ {per_stage(prox.inverse):,}"
          f" + thresholds {per_stage(prox.thresholds):,}")


if __name__ == "__main__":
    app.run(main)
