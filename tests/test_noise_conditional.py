"""The noise-conditional MGSTNet (issue 34): an extension of the paper's network that reduces to it
exactly, reads the noise level it is given (or estimates), and trains without NaN at any level."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unroll import noise
from unroll.config import Config, ConfigError
from unroll.models.mgstnet import MGSTNet, noise_feature, noise_gain

SMALL = dict(stages=2, scales=2, kernel_rcabs=1, image_rcabs=1, channels=3, kernel_size=7,
             features=8, kernel_features=4)


def _images(n=2, size=32, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3))


@pytest.mark.parametrize("image_step", ["gradient", "closed_form"])
def test_with_a_blind_noise_channel_and_zero_gains_it_is_the_paper_network(image_step):
    """Copy an unconditional network's parameters into a conditional one, with a zero weight on the
    noise channel: at zero gains (the initialisation) every sigma gives the paper network's output."""
    plain = MGSTNet(**SMALL, image_step=image_step, rngs=nnx.Rngs(0))
    cond = MGSTNet(**SMALL, image_step=image_step, noise_conditional=True, rngs=nnx.Rngs(5))
    plain_state = nnx.state(plain, nnx.Param)
    cond_state = nnx.state(cond, nnx.Param)
    flat_plain = dict(nnx.to_flat_state(plain_state))
    flat_cond = dict(nnx.to_flat_state(cond_state))
    assert set(flat_plain) < set(flat_cond)
    extra = sorted("/".join(map(str, k)) for k in set(flat_cond) - set(flat_plain))
    assert extra == ["stages/image_prox/noise_gains", "stages/kernel_prox/noise_gain",
                     "stages/noise_gains"]
    head = ("stages", "image_prox", "extractor", "head", "kernel")
    for key, value in flat_plain.items():
        new = value[...]
        if key == head:  # [K, 3, 3, C, F] -> [K, 3, 3, C + 1, F], the noise channel's weights 0
            new = jnp.concatenate([new, jnp.zeros(new.shape[:3] + (1,) + new.shape[4:])], axis=3)
        assert flat_cond[key][...].shape == new.shape, key
        flat_cond[key][...] = new
    nnx.update(cond, nnx.from_flat_state(flat_cond))
    g = _images()
    expected = plain(g).images
    for sigma in (0.0, 0.05, None):
        np.testing.assert_allclose(cond(g, sigma=sigma).images, expected, rtol=2e-5, atol=2e-6)


def test_the_noise_level_changes_the_output_and_none_means_the_estimate():
    net = MGSTNet(**SMALL, noise_conditional=True, rngs=nnx.Rngs(0))
    g = _images()
    low, high = net(g, sigma=0.0).images[-1], net(g, sigma=0.05).images[-1]
    assert float(jnp.abs(low - high).max()) > 1e-3
    np.testing.assert_array_equal(net(g).images, net(g, sigma=noise.estimate_batch(g)).images)
    per_image = net(g, sigma=jnp.array([0.0, 0.05])).images[-1]
    np.testing.assert_allclose(per_image[0], low[0], atol=1e-6)
    np.testing.assert_allclose(per_image[1], high[1], atol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 1e-4, 0.02, 0.5])
def test_gradients_are_finite_and_reach_the_gains(sigma):
    net = MGSTNet(**SMALL, noise_conditional=True, rngs=nnx.Rngs(0))
    g = _images()

    def loss(model):
        return jnp.mean((model(g, sigma=sigma).images[-1] - 0.5) ** 2)

    grads = nnx.grad(loss)(net)
    leaves = jax.tree.leaves(nnx.state(grads))
    assert all(bool(jnp.isfinite(x).all()) for x in leaves)
    assert float(jnp.abs(grads.stages.noise_gains[...]).sum()) > 0
    assert float(jnp.abs(grads.stages.image_prox.noise_gains[...]).sum()) > 0


def test_gain_is_exp_of_a_times_t_and_bounded():
    t = noise_feature(jnp.array([0.0, 0.01, 0.02]))
    np.testing.assert_allclose(t, np.log((np.array([0.0, 0.01, 0.02]) + 1e-3) / 1e-2), rtol=1e-6)
    np.testing.assert_allclose(noise_gain(0.7, t), np.exp(0.7 * np.asarray(t)), rtol=1e-6)
    assert float(noise_gain(1e6, t).max()) == pytest.approx(np.exp(5.0), rel=1e-6)
    assert float(noise_feature(-1.0)) == pytest.approx(np.log(0.1), rel=1e-6)  # clamped at 0


def test_sigma_is_refused_by_the_paper_network_and_the_variant_by_baselines():
    with pytest.raises(ValueError, match="noise-conditional"):
        MGSTNet(**SMALL, rngs=nnx.Rngs(0))(_images(), sigma=0.01)
    with pytest.raises(ConfigError, match="noise_conditional"):
        Config(model="madn", noise_conditional=True).validate()
    assert "noise_conditional" in Config().model_signature()


def test_a_users_image_prior_gets_the_conditioned_step_sizes_only():
    from unroll.models import priors
    net = MGSTNet(**SMALL, noise_conditional=True, rngs=nnx.Rngs(0),
                  image_prox=lambda rngs: priors.UNetDenoiser(3, features=4, rngs=rngs))
    g = _images()
    assert net(g, sigma=0.02).images.shape == (2, 2, 32, 32, 3)
