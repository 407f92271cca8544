"""Your own priors inside MGSTNet (image_prox / kernel_prox factories) and the shipped alternatives
to the paper's image prior (unroll.models.priors), chosen by Config.image_prior."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unroll import classical, losses
from unroll.config import Config, ConfigError
from unroll.models import MGSTNet, priors, registry

SMALL = dict(stages=2, scales=2, kernel_rcabs=0, image_rcabs=1, channels=1, kernel_size=5,
             features=4, kernel_features=4)
CONFIG = Config(**SMALL, steps=1)


def _leaves_close(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class Scale(nnx.Module):
    """A user's prox: x * (1 + w), w a learned array of the input's trailing shape."""

    def __init__(self, shape, rngs):
        self.w = nnx.Param(0.1 * jax.random.normal(rngs.params(), shape))

    def __call__(self, x):
        return x * (1 + self.w[...])


def test_user_factories_run_once_per_stage_and_receive_gradients():
    g = jax.random.uniform(jax.random.key(0), (2, 12, 12, 1))
    net = MGSTNet(**SMALL, image_prox=lambda rngs: Scale((1,), rngs),
                  kernel_prox=lambda rngs: Scale((5, 5), rngs), rngs=nnx.Rngs(1))
    out = net(g)
    assert out.images.shape == (2, 2, 12, 12, 1) and out.kernels.shape == (2, 2, 5, 5)
    # Stacked per stage, each stage its own draw.
    w_image, w_kernel = net.stages.image_prox.w[...], net.stages.kernel_prox.w[...]
    assert w_image.shape == (2, 1) and w_kernel.shape == (2, 5, 5)
    assert w_image[0, 0] != w_image[1, 0]
    # The stage really applies them: u_k = r_k (1 + w_k), and h_k from the scaled s_k (eq. 14).
    np.testing.assert_allclose(out.images, out.igdm_images * (1 + w_image[:, None, None, None]), rtol=1e-6)
    scaled = out.kgdm_kernels * (1 + w_kernel[:, None])
    np.testing.assert_allclose(out.kernels, scaled.clip(0) / scaled.clip(0).sum((-2, -1), keepdims=True),
                               rtol=1e-5, atol=1e-7)
    graphdef, params = nnx.split(net)
    sharp = jnp.clip(g + 0.1, 0, 1)
    grads = jax.grad(lambda p: losses.mgstnet_loss(nnx.merge(graphdef, p)(g), sharp, g))(params)
    assert float(jnp.abs(grads["stages"]["image_prox"]["w"][...]).min()) > 0
    assert float(jnp.abs(grads["stages"]["kernel_prox"]["w"][...]).max()) > 0


def test_paper_prior_is_the_default_network():
    built = registry.build(dataclasses.replace(CONFIG, image_prior="paper"))
    direct = MGSTNet(**SMALL, rngs=nnx.Rngs(CONFIG.seed))
    assert _leaves_close(nnx.state(built), nnx.state(direct))
    g = jax.random.uniform(jax.random.key(2), (1, 12, 12, 1))
    assert np.array_equal(built(g).images, direct(g).images)


def test_haar_gst_is_the_classical_wavelet_prox():
    r = jax.random.uniform(jax.random.key(3), (2, 13, 10, 3))
    for threshold in ("gst", "soft"):
        prox = priors.HaarGST(levels=3, threshold=threshold)
        theta, p = prox.thresholds[0].theta, getattr(prox.thresholds[0], "p", 1.0)
        want = classical.wavelet_prox(r, theta, p, levels=3, threshold=threshold)
        np.testing.assert_allclose(prox(r), want, rtol=1e-5, atol=1e-6)


def test_unet_denoiser_is_residual_and_keeps_any_size():
    net = priors.UNetDenoiser(channels=2, features=4, scales=3, blocks=1, rngs=nnx.Rngs(0))
    r = jax.random.uniform(jax.random.key(4), (1, 11, 14, 2))
    assert net(r).shape == r.shape
    net.tail.kernel[...] = jnp.zeros_like(net.tail.kernel[...])  # no residual branch: the identity
    np.testing.assert_array_equal(net(r), r)
    with pytest.raises(ValueError, match="scales"):
        priors.UNetDenoiser(scales=0, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("prior", ["unet", "haar_gst"])
def test_image_prior_config_builds_trains_and_differs_from_the_paper(prior):
    config = dataclasses.replace(CONFIG, image_prior=prior).validate()
    graphdef, params = registry.build_split(config)
    paper = registry.num_params(registry.build_split(CONFIG)[1])
    image_params = nnx.state(nnx.merge(graphdef, params).stages.image_prox)
    if prior == "haar_gst":  # thresholds only: theta and p per level and stage
        assert registry.num_params(image_params) == 2 * config.scales * config.stages
    else:
        assert registry.num_params(params) != paper
    g = jax.random.uniform(jax.random.key(5), (2, 12, 12, 1))
    sharp = jnp.clip(g + 0.05, 0, 1)
    grads = jax.grad(lambda p: losses.mgstnet_loss(nnx.merge(graphdef, p)(g), sharp, g))(params)
    image_grads = jax.tree.leaves(grads["stages"]["image_prox"])
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(grads))
    assert max(float(jnp.abs(x).max()) for x in image_grads) > 0


def test_image_prior_is_validated_and_part_of_the_signature():
    with pytest.raises(ConfigError, match="--image_prior"):
        dataclasses.replace(CONFIG, image_prior="vit").validate()
    assert CONFIG.model_signature()["image_prior"] == "paper"
    old = {k: v for k, v in CONFIG.to_dict().items() if k != "image_prior"}  # saved before the field
    assert Config.from_dict(old).image_prior == "paper"
    assert Config.from_dict(old).model_signature() == CONFIG.model_signature()
    assert dataclasses.replace(CONFIG, image_prior="unet").model_signature() != CONFIG.model_signature()
