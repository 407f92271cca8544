"""MGSTNet beyond the paper (issue 29): the closed-form image step and the warm start h_0."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unroll import kernels, metrics, nonblind, ops, verdict
from unroll.classical import warm
from unroll.config import Config, ConfigError
from unroll.models import MGSTNet

TINY = dict(stages=2, scales=2, kernel_rcabs=1, image_rcabs=1, features=8, kernel_features=4,
            kernel_size=9, reduction=2)


_JITTED = {}


def _forward(model, g, *h0):
    """The model's forward, jitted once per graph (so the tests share compilations)."""
    graphdef, state = nnx.split(model)
    if graphdef not in _JITTED:
        _JITTED[graphdef] = jax.jit(lambda s, x, *h: nnx.merge(graphdef, s)(x, *h))
    return _JITTED[graphdef](state, g, *h0)


def _shake_pair(seed=0, hw=(48, 48), channels=3, noise=0.0):
    rng = np.random.default_rng(seed)
    sharp = np.kron(rng.random((hw[0] // 4, hw[1] // 4, channels)), np.ones((4, 4, 1))).astype(np.float32)
    h = kernels.motion(9, rng, length=7.0)
    g = np.asarray(ops.blur(jnp.asarray(sharp)[None], jnp.asarray(h)[None]))
    g = g + noise * rng.standard_normal(g.shape).astype(np.float32)
    return jnp.asarray(sharp)[None], jnp.asarray(g), h


def test_a_uniform_h0_reproduces_the_papers_forward_exactly():
    model = MGSTNet(**TINY, rngs=nnx.Rngs(0))
    _, g, _ = _shake_pair()
    g = jnp.concatenate([g, g[:, ::-1]])
    default = _forward(model, g)
    for h0 in (kernels.uniform(9), np.stack([kernels.uniform(9)] * 2)):
        given = _forward(model, g, jnp.asarray(h0))
        for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(given)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_h0_is_used_and_checked():
    model = MGSTNet(**TINY, rngs=nnx.Rngs(0))
    _, g, h = _shake_pair()
    g = jnp.concatenate([g, g[:, ::-1]])
    out = _forward(model, g, jnp.asarray(np.stack([h, h])))
    assert not np.allclose(np.asarray(out.images), np.asarray(_forward(model, g).images))
    with pytest.raises(ValueError, match="h0 must be"):
        model(g, jnp.ones((7, 7)))
    with pytest.raises(ValueError, match="h0 must be"):
        model(g, jnp.ones((3, 9, 9)))


def test_parameters_of_the_two_image_steps():
    """A gradient-step model keeps exactly the paper's parameters (checkpoints load as before); the
    closed-form model has a beta per stage instead of rho."""
    grad = nnx.state(MGSTNet(**TINY, rngs=nnx.Rngs(0)), nnx.Param)
    closed = nnx.state(MGSTNet(**TINY, image_step="closed_form", rngs=nnx.Rngs(0)), nnx.Param)
    grad, closed = nnx.to_pure_dict(grad)["stages"], nnx.to_pure_dict(closed)["stages"]
    assert "raw_rho" in grad and "raw_beta" not in grad
    assert "raw_beta" in closed and "raw_rho" not in closed
    assert closed["raw_beta"].shape == (2,)
    with pytest.raises(ValueError, match="image_step"):
        MGSTNet(**TINY, image_step="newton")


def test_the_closed_form_step_uses_a_good_kernel_where_the_gradient_step_cannot():
    """Untrained networks (their priors add almost nothing) started from the true kernel: the
    closed-form step restores most of the blur, two gradient steps little; from the uniform h_0 the
    closed-form network is worse than from the true kernel."""
    sharp, g, h = _shake_pair(noise=0.002)
    psnr = {}
    for step in ("gradient", "closed_form"):
        model = MGSTNet(**TINY, image_step=step, rngs=nnx.Rngs(0))
        for name, h0 in (("true", jnp.asarray(h)), ("uniform", None)):
            out = _forward(model, g, *(() if h0 is None else (h0,)))
            psnr[step, name] = float(metrics.psnr(jnp.clip(out.images[-1], 0, 1), sharp)[0])
    blurred = float(metrics.psnr(g, sharp)[0])
    assert psnr["closed_form", "true"] > blurred + 3, (psnr, blurred)
    assert psnr["closed_form", "true"] > psnr["gradient", "true"] + 2, psnr
    assert psnr["closed_form", "true"] > psnr["closed_form", "uniform"] + 2, psnr


def test_gradients_reach_beta_and_h0_paths_are_finite():
    model = MGSTNet(**TINY, image_step="closed_form", rngs=nnx.Rngs(0))
    sharp, g, h = _shake_pair()
    graphdef, params = nnx.split(model)

    def loss(params):
        out = nnx.merge(graphdef, params)(g, jnp.asarray(h))
        return jnp.mean((out.images - sharp) ** 2)

    grads = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["stages"]["raw_beta"]).min()) > 0


def _natural():
    """A 64 px crop of a photograph (scikit-image's astronaut), [1, 64, 64, 3] in [0, 1]: the check's
    thresholds are calibrated on natural images, whose restorations stay near the input's range."""
    from skimage import data as skdata
    return jnp.asarray(skdata.astronaut()[100:164, 180:244], jnp.float32)[None] / 255


def test_a_nonblind_u0_is_the_restoration_with_h0_where_it_passes_the_check_else_g():
    """u_0 per image: the checked public `nonblind.deconvolve` with h_0 where `verdict.passes`
    (a photograph's mild blur restored with its own kernel), g where it does not (a 9 px line,
    the wrong way, rings and fills its window; a 5 px line the wrong way rings, which clipping
    would hide, so the check sees the unclipped restoration)."""
    sharp = _natural()
    mild = jnp.asarray(kernels.gaussian(9, 1.2))
    line = np.zeros((9, 9), np.float32)
    line[4, :] = 1 / 9
    short = np.zeros((9, 9), np.float32)  # 5 px: compact, so only the ringing shows it is wrong
    short[4, 2:7] = 1 / 5
    g = jnp.concatenate([ops.blur(sharp, mild[None]), ops.blur(sharp, jnp.asarray(line.T)[None]),
                         ops.blur(sharp, jnp.asarray(short.T)[None])])
    h0 = jnp.stack([mild, jnp.asarray(line), jnp.asarray(short)])
    unclipped = np.asarray(nonblind.deconvolve(g, h0))
    restored = np.clip(unclipped, 0, 1)
    assert list(np.asarray(verdict.passes(g, unclipped, h0))) == [True, False, False]
    # clipped to [0, 1], the third one's ringing would hide: the check must see it unclipped
    assert bool(verdict.passes(g[2:], restored[2:], h0[2:])[0])
    model = MGSTNet(**TINY, image_init="nonblind", rngs=nnx.Rngs(0))
    u0 = np.asarray(model.initial_image(g, h0))
    np.testing.assert_allclose(u0[0], restored[0], atol=1e-5)
    np.testing.assert_array_equal(u0[1:], np.asarray(g[1:]))
    assert MGSTNet(**TINY, rngs=nnx.Rngs(0)).initial_image(g, h0) is g
    with pytest.raises(ValueError, match="image_init"):
        MGSTNet(**TINY, image_init="wiener")


def test_a_nonblind_u0_lets_the_untrained_network_use_a_good_kernel():
    """Untrained networks (priors near the identity) with the paper's gradient step, from the true
    kernel: from u_0 = g the first kernel step drifts from h_0 and two gradient steps barely deblur;
    from the non-blind u_0 the kernel stays close and the output is far sharper. Gradients to every
    parameter are finite (u_0 itself is outside the gradient: it depends on no parameter)."""
    sharp = _natural()
    h = kernels.motion(9, np.random.default_rng(0), length=4.0)  # within the window: the check passes
    h0 = jnp.asarray(h)[None]
    g = ops.blur(sharp, h0) + 0.002 * jax.random.normal(jax.random.key(0), sharp.shape)
    out = {init: _forward(MGSTNet(**TINY, image_init=init, rngs=nnx.Rngs(0)), g, h0)
           for init in ("blurred", "nonblind")}
    psnr = {k: float(metrics.psnr(jnp.clip(o.images[-1], 0, 1), sharp)[0]) for k, o in out.items()}
    mnc = {k: float(metrics.mnc(o.kernels[-1][0], h)[0]) for k, o in out.items()}
    assert psnr["nonblind"] > psnr["blurred"] + 3, psnr
    assert mnc["nonblind"] > mnc["blurred"], mnc
    model = MGSTNet(**TINY, image_init="nonblind", rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    grads = jax.jit(jax.grad(lambda p: jnp.mean((nnx.merge(graphdef, p)(g, h0).images - sharp) ** 2)))(params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))


def test_config_fields_are_validated_and_part_of_the_signature():
    assert Config(steps=1, image_step="closed_form").validate().model_signature()["image_step"] == "closed_form"
    assert Config.from_dict({"steps": 1}).image_step == "gradient"  # older checkpoints: the paper's step
    with pytest.raises(ConfigError, match="--image_step"):
        Config(steps=1, image_step="x").validate()
    with pytest.raises(ConfigError, match="--kernel_init"):
        Config(steps=1, kernel_init="true").validate()
    with pytest.raises(ConfigError, match="--kernel_init"):
        Config(steps=1, model="idc", kernel_init="classical").validate()
    assert warm.warm_start(Config(steps=1)) is None
    nonblind_u0 = Config(steps=1, kernel_init="classical", image_init="nonblind").validate()
    assert nonblind_u0.model_signature()["image_init"] == "nonblind"
    assert Config.from_dict({"steps": 1}).image_init == "blurred"
    with pytest.raises(ConfigError, match="--image_init"):
        Config(steps=1, image_init="nonblind").validate()  # no estimate of the blur to restore with
    with pytest.raises(ConfigError, match="--image_init"):
        Config(steps=1, kernel_init="classical", image_init="x").validate()


def test_initial_kernels_estimate_the_blur_from_the_luminance():
    """A blurred RGB image: the classical estimate beats the uniform kernel as a guess of the truth,
    and equals the estimate on the luminance."""
    rng = np.random.default_rng(3)
    gray = np.kron(rng.random((16, 16)), np.ones((5, 5))).astype(np.float32)  # 80x80 blocks
    h = kernels.motion(9, rng, length=6.0)
    g = np.asarray(ops.blur(jnp.asarray(gray)[None, ..., None], jnp.asarray(h)[None]))
    rgb = np.repeat(g, 3, axis=-1)
    h0, trusted = warm.warm_start(Config(steps=1, kernel_size=9, kernel_init="classical"))(rgb)
    assert h0.shape == (1, 9, 9) and abs(float(h0.sum()) - 1) < 1e-4 and trusted.shape == (1,)
    assert float(metrics.mnc(h0[0], h)[0]) > float(metrics.mnc(kernels.uniform(9), h)[0]) + 0.2
    # The luminance of a replicated gray image is the image up to float32 rounding.
    np.testing.assert_allclose(h0, warm.initial_kernels(g, 9), atol=2e-4)


def test_a_warm_started_closed_form_network_trains_evaluates_and_loads(tmp_path, monkeypatch):
    """Training batches carry perturbed true kernels as h0; evaluation and unroll.load's Model
    start from the classical estimator's kernels (counted here), and both give finite results."""
    import unroll
    from unroll import train
    from unroll.classical import warm as warm_module

    calls = []
    original = warm_module.initial_state
    monkeypatch.setattr(warm_module, "initial_state",
                        lambda g, k, *a: calls.append(np.shape(g)) or original(g, k, *a))
    config = Config(stages=1, scales=1, kernel_rcabs=0, image_rcabs=0, features=4, kernel_features=4,
                    kernel_size=7, patch_size=32, batch_size=2, steps=2, learning_rate=1e-3,
                    final_lr_steps=0, eval_crop=48, log_every=1, save_every=2, num_samples=0,
                    image_step="closed_form", kernel_init="classical", shake_prob=0.5)
    results = train.train_and_evaluate(config, tmp_path)
    assert np.isfinite(results["psnr"]) and len(calls) == results["num_images"]
    model = unroll.load(tmp_path)
    assert model.config.kernel_init == "classical"
    restored, kernel = model.deblur(np.full((40, 44, 3), 0.5, np.float32))
    assert restored.shape == (40, 44, 3) and np.isfinite(restored).all()
    assert len(calls) == results["num_images"] + 1


def test_a_network_from_a_kernel_bank_and_a_nonblind_u0_trains_and_resumes(tmp_path):
    """--kernel_bank: the bank is made once in the workdir (the batches it gives are checked in
    test_kernel_bank.py), and a resumed run reads the same bank back."""
    from unroll import train
    from unroll.classical.bank import KernelBank

    config = Config(stages=1, scales=1, kernel_rcabs=0, image_rcabs=0, features=4, kernel_features=4,
                    kernel_size=7, patch_size=32, batch_size=2, steps=1, learning_rate=1e-3,
                    final_lr_steps=0, eval_crop=48, log_every=1, save_every=1, num_samples=0,
                    kernel_init="classical", image_init="nonblind", kernel_bank=4, motion_prob=1.0)
    assert np.isfinite(train.train_and_evaluate(config, tmp_path)["psnr"])
    made = KernelBank.load(tmp_path / "kernel_bank.npz")
    assert len(made) == 4 and made.kernel_size == 7
    stamp = (tmp_path / "kernel_bank.npz").stat().st_mtime_ns
    results = train.train_and_evaluate(dataclasses.replace(config, steps=2), tmp_path)
    assert np.isfinite(results["psnr"])
    assert (tmp_path / "kernel_bank.npz").stat().st_mtime_ns == stamp  # read back, not rebuilt


def test_the_image_path_of_a_nonblind_warm_start_is_the_network_with_its_own_kernels():
    """--global_kernel's image path starts from the same u_0 as the network (g restored with h_0)."""
    from unroll.inference.model import image_path

    sharp = _natural()
    h = kernels.motion(9, np.random.default_rng(0), length=4.0)
    h0 = jnp.asarray(h)[None]
    g = ops.blur(sharp, h0)
    model = MGSTNet(**TINY, image_init="nonblind", rngs=nnx.Rngs(0))
    out = model(g, h0)
    np.testing.assert_allclose(np.asarray(image_path(model, g, tuple(out.kernels), None, h0)),
                               np.asarray(out.images[-1]), atol=1e-5)
    assert float(jnp.abs(image_path(model, g, tuple(out.kernels)) - out.images[-1]).max()) > 1e-3


def test_initial_kernels_retry_an_estimate_that_fills_its_window_in_a_larger_one():
    """A blur nearly as large as the window: the estimate fills it and its restoration fails the
    check; the retry in a 1.5x window passes, so its kernel, cropped back, is trusted (though in the
    smaller window it would fail the spread bound), and it is at least as close to the truth.
    Without `retry` the first estimate stays, untrusted; MGSTNet restores u_0 where trusted."""
    from skimage import data as skdata

    from unroll import nonblind
    from unroll.classical import check_restoration

    sharp = skdata.camera()[100:260, 150:310, None].astype(np.float32)[None] / 255
    rng = np.random.default_rng(1)
    h = kernels.motion(9, rng, length=8.0)
    g = np.asarray(ops.blur(jnp.asarray(sharp), jnp.asarray(h)[None]))
    g = (np.round(np.clip(g + 0.003 * rng.standard_normal(g.shape), 0, 1) * 255) / 255).astype(np.float32)
    (first, first_ok), (retried, retried_ok) = warm.initial_state(g, 9, retry=False), warm.initial_state(g, 9)
    np.testing.assert_array_equal(warm.initial_kernels(g, 9), retried)

    def passes(h0, pad=0):
        u = np.asarray(nonblind.deconvolve_batch(jnp.asarray(g), jnp.asarray(h0)))
        return bool(check_restoration(g, u, np.pad(h0, ((0, 0), (pad, pad), (pad, pad))),
                                      layout="NHWC").ok[0])

    assert not passes(first) and first_ok.tolist() == [False]
    assert retried_ok.tolist() == [True] and passes(retried, pad=2) and not passes(retried)
    assert retried.shape == (1, 9, 9) and abs(float(retried.sum()) - 1) < 1e-5 and (retried >= 0).all()
    assert float(metrics.mnc(retried[0], h)[0]) >= float(metrics.mnc(first[0], h)[0])
    model = MGSTNet(**dict(TINY, kernel_size=9, channels=1), image_init="nonblind", rngs=nnx.Rngs(0))
    restored = np.clip(np.asarray(nonblind.deconvolve_batch(jnp.asarray(g), jnp.asarray(retried))), 0, 1)
    np.testing.assert_allclose(model.initial_image(jnp.asarray(g), jnp.asarray(retried), retried_ok),
                               restored, atol=1e-5)
    np.testing.assert_array_equal(model.initial_image(jnp.asarray(g), jnp.asarray(retried)), g)
