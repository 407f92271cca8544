"""Classical unrolled solver: Haar orthonormality, exact wavelet prox, energy descent, hypergradients
against finite differences, tuning, kernel constraints."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unroll import classical, kernels, ops


def _ravel(coeffs):
    approx, details = coeffs
    return jnp.concatenate([approx.ravel()] + [d.ravel() for d in jax.tree.leaves(details)])


@pytest.mark.parametrize("shape,levels", [((1, 8, 8, 1), 3), ((2, 7, 10, 2), 3)])
def test_haar_is_orthonormal_and_inverse_is_transpose(shape, levels):
    """W^T W = W W^T = I (odd sizes included), norms preserved, inverse = transpose = exact."""
    n = int(np.prod(shape))

    @jax.jit
    def check(x):
        forward = lambda y: _ravel(classical.haar_forward(y.reshape(shape), levels))  # noqa: E731
        W = jax.vmap(forward)(jnp.eye(n, dtype=x.dtype)).T  # column i: W e_i
        coeffs = classical.haar_forward(x, levels)
        (xt,) = jax.linear_transpose(lambda y: classical.haar_forward(y, levels), x)(coeffs)
        return W, jnp.linalg.norm(_ravel(coeffs)), classical.haar_inverse(*coeffs), xt

    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).standard_normal(shape))
        W, norm, inverse, transpose = map(np.asarray, check(x))
    assert W.shape == (n, n)
    np.testing.assert_allclose(W.T @ W, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(W @ W.T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(norm, np.linalg.norm(np.asarray(x)), rtol=1e-12)
    np.testing.assert_allclose(inverse, np.asarray(x), atol=1e-12)
    np.testing.assert_allclose(transpose, np.asarray(x), atol=1e-12)  # jax.linear_transpose of W


def _brute_force_prox(r, t, p):
    """argmin_u 1/2 ||u - r||^2 + t ||W_d u||_p^p over 2x2 images (one Haar level) by a dense 4-D
    grid search in pixel space, refined twice around the best point."""
    W = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
    # (the 2x2 orthonormal Haar basis written out: coefficients = W @ pixels, row 0 the approximation)

    def energy(U):  # U: [M, 4]
        c = U @ W.T
        return 0.5 * np.sum((U - r) ** 2, axis=1) + t * np.sum(np.abs(c[:, 1:]) ** p, axis=1)

    centre, half = r.copy(), 1.2
    for points in (31, 21, 21):
        axes = [np.linspace(c - half, c + half, points) for c in centre]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 4)
        e = energy(grid)
        centre = grid[np.argmin(e)]
        half = 2.5 * half / (points - 1)
    return centre, float(energy(centre[None])[0]), energy


prox = jax.jit(functools.partial(classical.wavelet_prox, levels=1, gst_iterations=60),
               static_argnames="threshold")


@pytest.mark.parametrize("threshold,p", [("soft", 1.0), ("gst", 0.5), ("gst", 0.8)])
def test_wavelet_prox_matches_brute_force(threshold, p):
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        for _ in range(2):
            r = rng.uniform(-1, 1, 4)
            t = 0.15
            u = np.asarray(prox(jnp.asarray(r).reshape(1, 2, 2, 1), t, p, threshold=threshold)).ravel()
            ref, e_ref, energy = _brute_force_prox(r, t, p)
            e_u = float(energy(u[None])[0])
            assert e_u <= e_ref + 1e-6, (u, ref)
            np.testing.assert_allclose(u, ref, atol=2e-3)


def _problem(dtype, n=1, hw=32, k=5, seed=0):
    from unroll import data

    rng = np.random.default_rng(seed)
    image = data.builtin_samples("test", 1)[1]["image"]  # coins: grayscale, strong edges
    sharp = np.stack([image[40 + 9 * i:40 + 9 * i + hw, 40:40 + hw] for i in range(n)])
    h_true = np.stack([kernels.gaussian(k, 1.0 + 0.3 * i) for i in range(n)])
    g = ops.blur(jnp.asarray(sharp, dtype), jnp.asarray(h_true, dtype))
    g = g + jnp.asarray(0.01 * rng.standard_normal(g.shape), dtype)
    return jnp.asarray(sharp, dtype), g, jnp.asarray(h_true, dtype)


@pytest.mark.parametrize("threshold", ["soft", "gst"])
def test_objective_decreases_with_safe_steps(threshold):
    """Plain alternating ISTA (no momentum, no cycle spinning, intensity domain: the iterations whose
    energy `objective` is) from a 3x3 box: the energy never increases and falls substantially."""
    with jax.enable_x64(True):
        _, g, _ = _problem(jnp.float64)
        params = classical.default_params(25, 1, 0, mu=0.5, lam=1e-4, theta=0.02, p=0.5,
                                          dtype=jnp.float64)
        step = jax.jit(functools.partial(classical.iteration, threshold=threshold, gst_iterations=30,
                                         shifts=1, kernel_domain="intensity", momentum=0.0))
        objective = jax.jit(functools.partial(classical.objective, threshold=threshold))
        u = u_prev = g
        t, h = jnp.ones(1, jnp.float64), classical.initial_kernel(1, 5, jnp.float64)
        energies, half_steps = [], []
        for k in range(25):
            pk = {name: params[name][0, k] for name in classical.BLIND}
            energy = functools.partial(objective, g=g, params_k=pk)
            energies.append(float(energy(u, h)[0]))
            u, u_prev, t, h = step(u, u_prev, t, h, g, pk)
            half_steps.append((float(energy(u_prev, h)[0]), float(energy(u, h)[0])))
        energies.append(float(energy(u, h)[0]))
        energies = np.array(energies)
        assert np.all(np.diff(energies) <= 1e-9 * energies[:-1]), energies
        assert energies[-1] < 0.8 * energies[0]
        # The image half-step is an exact proximal-gradient step: descent is a theorem there.
        assert all(after <= before * (1 + 1e-12) for before, after in half_steps)


def test_hypergradients_match_finite_differences():
    """jax.grad of the training loss (through two scales, the kernel resize and recentring, and
    the non-blind phase) against central differences, in float64."""
    with jax.enable_x64(True):
        sharp, g, _ = _problem(jnp.float64, n=2, hw=20, k=5)
        params = classical.default_params(2, 2, 1, lam=1e-6, theta=0.01, p=0.6, final_theta=0.002,
                                          dtype=jnp.float64)
        loss = functools.partial(classical.loss, iterations=2, kernel_size=5, border=2,
                                 kernel_weight=0.1, shifts=1, threshold="gst")
        value_and_grad = jax.jit(jax.value_and_grad(loss))  # one compilation for both
        _, grads = value_and_grad(params, g, sharp)
        for name in classical.PARAM_NAMES:
            assert np.all(np.isfinite(np.asarray(grads[name]))), name
            assert float(jnp.max(jnp.abs(grads[name]))) > 1e-6, name  # every parameter acts
        rng = np.random.default_rng(0)
        eps = 1e-6
        # Random directions in all parameters at once, and single coordinates at the coarse scale.
        directions = [{k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()}
                      for _ in range(2)]
        for name in ("mu", "lam", "rho", "theta", "p"):
            d = {k: jnp.zeros_like(v) for k, v in params.items()}
            directions.append({**d, name: d[name].at[0, 0].set(1.0)})
        for d in directions:
            plus = {k: params[k] + eps * d[k] for k in params}
            minus = {k: params[k] - eps * d[k] for k in params}
            fd = (float(value_and_grad(plus, g, sharp)[0])
                  - float(value_and_grad(minus, g, sharp)[0])) / (2 * eps)
            ad = sum(float(jnp.vdot(grads[k], d[k])) for k in params)
            np.testing.assert_allclose(ad, fd, rtol=1e-4, atol=1e-7)


def test_tuning_decreases_the_training_loss():
    pairs = classical.make_training_pairs(3, patch=32, kernel_size=7, seed=0, noise=0.005)
    params = classical.default_params(3, 1, 3)
    # history[i] is the loss before step i (all pairs in every batch): one compilation serves all.
    tuned, history = classical.tune(params, pairs, 7, 0.1, kernel_size=7, shifts=1)
    assert len(history) == 7 and np.all(np.isfinite(history))
    assert history[-1] < history[0] - 0.1, history
    assert set(tuned) == set(params) and all(tuned[k].shape == params[k].shape for k in params)


def test_solver_output_kernel_is_a_normalised_nonnegative_kernel():
    sharp, g, h_true = _problem(jnp.float32, n=2, hw=40, k=7)
    params = classical.default_params(3, 2, 2)
    u, h = classical.solve(g, params, 3, 9)
    assert u.shape == g.shape and h.shape == (2, 9, 9)
    assert np.all(np.isfinite(np.asarray(u)))
    assert float(jnp.min(h)) >= 0
    np.testing.assert_allclose(np.asarray(jnp.sum(h, axis=(1, 2))), 1.0, rtol=1e-5)


def test_bad_arguments_raise():
    g = jnp.zeros((1, 32, 32, 1))
    params = classical.default_params(4, 1, 2)
    with pytest.raises(ValueError, match="iterations"):
        classical.solve(g, params, 5, 7)
    with pytest.raises(ValueError, match="odd"):
        classical.solve(g, params, 4, 8)
    with pytest.raises(ValueError, match="keys"):
        classical.solve(g, {k: v for k, v in params.items() if k != "mu"}, 4, 7)
    with pytest.raises(ValueError, match="threshold"):
        classical.solve(g, params, 4, 7, threshold="hard")
    with pytest.raises(ValueError, match="positive"):
        classical.default_params(4, 1, 2, theta=-1.0)


def test_pyramid_and_kernel_resize_keep_the_centre():
    assert classical.pyramid((255, 255), 27, 3) == [(64, 64, 7), (128, 128, 13), (255, 255, 27)]
    h = jnp.asarray(kernels.gaussian(7, 1.0))[None]
    up = classical.unrolled._resize_kernel(h, 13, (2.0, 2.0))
    assert float(jnp.sum(up)) == pytest.approx(1.0, rel=1e-5)
    ys = jnp.arange(13.0)
    assert float(jnp.sum(up[0] * ys[:, None])) == pytest.approx(6.0, abs=1e-4)
    assert float(jnp.sum(up[0] * ys[None, :])) == pytest.approx(6.0, abs=1e-4)


def test_lipschitz_bound_bounds_the_symmetric_blur():
    @jax.jit
    def norm_and_bound(h, v):  # power iteration for ||A||^2, A = symmetric-boundary blur
        def body(_, v):
            w = ops.blur_adjoint(ops.blur(v, h), h)
            return w / jnp.linalg.norm(w)
        v = jax.lax.fori_loop(0, 100, body, v)
        return jnp.vdot(v, ops.blur_adjoint(ops.blur(v, h), h)), classical.image_lipschitz_bound(h)[0]

    rng = np.random.default_rng(0)
    corner = np.zeros((1, 9, 9), np.float32)
    corner[0, 0, 0] = 1
    v = jnp.asarray(rng.standard_normal((1, 40, 40, 1)), jnp.float32)
    v = v / jnp.linalg.norm(v)
    results = [tuple(map(float, norm_and_bound(jnp.asarray(h), v)))
               for h in (corner, kernels.motion(9, rng)[None], kernels.gaussian(9, 1.5)[None])]
    for norm, bound in results:
        assert norm <= bound * (1 + 1e-4)
    # A delta in the corner of its window: the mirrored border makes ||A||^2 = 4 (not <= 1).
    assert results[0][0] == pytest.approx(4.0, rel=1e-3) and results[0][1] == pytest.approx(4.0)
    assert results[2][1] == pytest.approx(1.0, abs=1e-5)  # symmetric kernel: the bound is 1


# ----------------------------------------------------------------------------------------------------
# The coarse-to-fine L0 solver (`unroll.classical.l0`).


def _capture(size=64, k=7, seed=3):
    """Piecewise-constant scene (strong edges), the valid part of its blur: a real-capture frame."""
    from scipy.signal import convolve2d

    rng = np.random.default_rng(seed)
    n = size + k - 1
    scene = np.kron(rng.random((n // 8 + 1, n // 8 + 1)), np.ones((8, 8)))[:n, :n]
    h = kernels.motion(k, rng, length=k - 2).astype(np.float64)
    g = convolve2d(scene, h, mode="valid") + 0.002 * rng.standard_normal((size, size))
    return g.astype(np.float32), scene[k // 2:k // 2 + size, k // 2:k // 2 + size], h.astype(np.float32)


def test_l0_solver_recovers_a_motion_kernel():
    from unroll import metrics

    g, sharp, h = _capture()
    u, he = classical.blind_deconvolve(g[None], 7)
    assert u.shape == (1, 64, 64) and he.shape == (1, 7, 7)
    np.testing.assert_allclose(float(jnp.sum(he)), 1.0, rtol=1e-5)
    assert float(jnp.min(he)) >= 0
    delta = jnp.asarray(kernels.delta(7))
    mnc = float(metrics.mnc(he, jnp.asarray(h)[None])[0])
    assert mnc > 0.9 > float(metrics.mnc(delta, jnp.asarray(h))[0]) + 0.2, mnc


def test_l0_pyramid_cleanup_and_periodic_extension():
    from unroll.classical import l0

    geo = l0.pyramid((255, 255), 27, 1 / np.sqrt(2), 5)
    assert geo[-1] == (255, 255, 27) and [k for _, _, k in geo] == [5, 7, 9, 13, 19, 27]
    h = classical.cleanup(jnp.array([[[-1.0, 0.01, 1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]), 0.05)
    np.testing.assert_allclose(np.asarray(h[0]), [[0, 0, 0.25], [0.5, 0, 0], [0, 0, 0.25]])
    g = jnp.asarray(np.random.default_rng(0).random((1, 20, 30)), jnp.float32)
    x = l0.periodic_extend(g, (32, 45))
    np.testing.assert_array_equal(np.asarray(x[:, :20, :30]), np.asarray(g))
    # no jump across the wrap: neighbouring differences there are at most one ramp step
    assert float(jnp.max(jnp.abs(x[:, :20, 0] - x[:, :20, -1]))) <= 1.0 / 15 + 1e-6
    assert float(jnp.max(jnp.abs(x[:, 0, :] - x[:, -1, :]))) <= 1.0 / 12 + 1e-6
    with pytest.raises(ValueError, match="odd"):
        classical.estimate_kernel(np.zeros((64, 64), np.float32), 8)


# ----------------------------------------------------------------------------------------------------
# Input forms, the failure check and the fallback ("never worse").


def test_layouts_read_every_input_form_and_refuse_the_others():
    from unroll.classical import layout

    for shape, name, n in [((40, 50), "HW", 1), ((2, 40, 50), "NHW", 2), ((40, 50, 3), "HWC", 1),
                           ((40, 50, 1), "HWC", 1), ((2, 40, 50, 3), "NHWC", 2)]:
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        g4, got = layout.as_batch(x)
        assert got == name and g4.shape[0] == n and g4.shape[1:3] == (40, 50), (shape, got)
        np.testing.assert_array_equal(np.asarray(layout.from_batch(g4, got)), x)
        assert layout.from_batch(jnp.zeros((n, 5, 5)), got).shape == ((n, 5, 5) if name[0] == "N"
                                                                      else (5, 5))
    # luminance: BT.601 for RGB, the band mean otherwise
    rgb = jnp.asarray(np.random.default_rng(0).random((1, 4, 4, 3)), jnp.float32)
    np.testing.assert_allclose(layout.luminance(rgb), rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587
                               + rgb[..., 2] * 0.114, rtol=1e-6)
    np.testing.assert_allclose(layout.luminance(rgb[..., :2]), rgb[..., :2].mean(-1), rtol=1e-6)
    assert layout.as_batch(np.zeros((5, 40, 50)), "HWC")[1] == "HWC"  # said explicitly
    for bad, kw, match in [((2, 2, 40, 50, 3), {}, "got shape"), ((40, 50), {"layout": "CHW"}, "layout"),
                           ((40, 50), {"layout": "HWC"}, "3-D")]:
        with pytest.raises(ValueError, match=match):
            layout.as_batch(np.zeros(bad), **kw)


@pytest.mark.parametrize("shape,kw,match", [
    ((64, 64, 5), {}, "layout='HWC'"),  # a last axis > 4 reads as [N, H, W]: 5 px wide is too narrow
    ((64, 64), {}, "twice the kernel"), ((2, 2, 64, 64, 1), {}, "got shape"),
    ((1, 64, 64), {"layout": "NHWC"}, "4-D")])
def test_blind_deconvolve_refuses_bad_shapes_in_one_line(shape, kw, match):
    k = 33 if shape == (64, 64) else 7
    for fn in (classical.blind_deconvolve, classical.estimate_kernel):
        with pytest.raises(ValueError, match=match) as err:
            fn(np.zeros(shape, np.float32), k, **kw)
        assert "\n" not in str(err.value)


def test_blind_deconvolve_forms_agree_and_rgb_of_gray_is_gray_per_band():
    g, _, _ = _capture()
    u, h = classical.blind_deconvolve(g, 7)  # [H, W]: one compilation (batch 1) serves every form
    assert u.shape == (64, 64) and h.shape == (7, 7)
    rgb = np.repeat(g[..., None], 3, axis=-1)
    for x, kw, u_shape, h_shape in [(rgb, {}, (64, 64, 3), (7, 7)), (g[None], {}, (1, 64, 64), (1, 7, 7)),
                                    (rgb[None], {}, (1, 64, 64, 3), (1, 7, 7)),
                                    (g[..., None], {}, (64, 64, 1), (7, 7))]:
        ux, hx = classical.blind_deconvolve(x, 7, **kw)
        assert ux.shape == u_shape and hx.shape == h_shape
        np.testing.assert_allclose(np.asarray(hx).reshape(7, 7), h, atol=1e-4)
        bands = np.asarray(ux).reshape(64, 64, -1)
        for c in range(bands.shape[-1]):  # luminance of a replicated gray = the gray (to rounding)
            np.testing.assert_allclose(bands[..., c], u, atol=1e-3)
    np.testing.assert_allclose(classical.estimate_kernel(rgb, 7), h, atol=1e-4)
    # with the fallback (no smaller size to retry at 7): the plain result if it passes, else the input
    uf, hf, attempt = classical.blind_deconvolve(g, 7, fallback=True, return_attempt=True)
    passed = bool(classical.check_restoration(g, u, h).ok[0])
    assert attempt == (0 if passed else -1) and uf.shape == (64, 64) and hf.shape == (7, 7)
    np.testing.assert_array_equal(np.asarray(uf), np.asarray(u) if passed else g)
    np.testing.assert_array_equal(np.asarray(hf), np.asarray(h) if passed else kernels.delta(7))


def _photo(k=9, size=128, noise=0.005, seed=0):
    """A real photograph (scikit-image's camera), blurred by a camera-shake kernel, 8-bit."""
    from skimage import data as skdata

    from unroll.data.degradation import blur_host

    rng = np.random.default_rng(seed)
    sharp = skdata.camera()[150:150 + size, 200:200 + size, None].astype(np.float32) / 255
    h = kernels.motion(k, rng, length=k - 1).astype(np.float32)
    g = blur_host(sharp, h) + noise * rng.standard_normal(sharp.shape).astype(np.float32)
    return (np.round(np.clip(g, 0, 1) * 255) / 255).astype(np.float32)[..., 0], sharp[..., 0], h


def test_check_passes_the_true_kernel_and_fails_a_wrong_one():
    from unroll import metrics, nonblind

    g, sharp, h = _photo()
    good = np.asarray(nonblind.deconvolve(g, h))
    wrong = np.zeros((21, 21), np.float32)
    wrong[10, [0, 20]] = 0.5  # two far-apart points: a blur that is not there
    bad = np.asarray(nonblind.deconvolve(g, wrong))
    psnr = lambda x: float(metrics.psnr(np.clip(x, 0, 1)[None, ..., None], sharp[None, ..., None])[0])  # noqa: E731
    assert psnr(good) > psnr(g) + 1 and psnr(bad) < psnr(g) - 3  # the case is what it claims to be
    verdict = classical.check_restoration(np.stack([g, g]), np.stack([good, bad]), np.stack([
        np.pad(h, 6), wrong]))
    assert verdict.ok.tolist() == [True, False], verdict.score
    assert classical.check_restoration(g[..., None], good[..., None], np.pad(h, 6)).ok.tolist() == [True]
    # the same kernel in a window it fills looks like a failed estimate's diffuse blob
    assert classical.check_restoration(g, good, h).ok.tolist() == [False]
    # the fallback: the wrong result is replaced by the input (no retry size), the good one kept
    u, he, attempt = classical.never_worse(g, bad, wrong, 21, retry_sizes=())
    np.testing.assert_array_equal(u, g)
    np.testing.assert_array_equal(he, kernels.delta(21))
    assert attempt == -1
    u, he, attempt = classical.never_worse(g, good, np.pad(h, 6), 21, retry_sizes=())
    np.testing.assert_array_equal(u, good)
    assert attempt == 0
    with pytest.raises(ValueError, match="differ from kernel_size"):
        classical.never_worse(g, good, np.pad(h, 6), 21, retry_sizes=(21,))


def test_never_worse_keeps_the_first_retry_that_passes(monkeypatch):
    from unroll import nonblind
    from unroll.classical import l0

    g, _, h = _photo()
    good = np.asarray(nonblind.deconvolve(g, h))
    wrong = np.zeros((2, 21, 21), np.float32)
    wrong[:, 10, [0, 20]] = 0.5
    g2 = np.stack([g, g])
    bad = np.asarray(nonblind.deconvolve(g2[..., None], wrong))[..., 0]
    calls = []

    def retry(x, k, *args, **kwargs):  # the retry at size 17 finds the true kernel, at 7 nothing
        calls.append((x.shape, k))
        n = x.shape[0]
        if k == 17:
            return (jnp.asarray(np.repeat(good[None, ..., None], n, 0)),
                    jnp.asarray(np.repeat(np.pad(h, 4)[None], n, 0)))
        return jnp.asarray(x), jnp.asarray(np.repeat(kernels.delta(7)[None], n, 0))

    monkeypatch.setattr(l0, "blind_deconvolve", retry)
    u, he, attempt = classical.never_worse(g2, bad, wrong, 21, retry_sizes=(17, 7))
    assert attempt.tolist() == [1, 1] and calls == [((2, 128, 128, 1), 17)]
    np.testing.assert_array_equal(u, np.stack([good, good]))
    np.testing.assert_array_equal(he[0], np.pad(h, 6))  # zero-padded back to 21 x 21
    # three failing images: their retry batch is padded to a power of two (fewer compilations)
    calls.clear()
    u, he, attempt = classical.never_worse(np.stack([g] * 4), np.stack([bad[0]] * 3 + [good]),
                                           np.stack([wrong[0]] * 3 + [np.pad(h, 6)]), 21,
                                           retry_sizes=(7,))
    assert attempt.tolist() == [1, 1, 1, 0] and calls == [((4, 128, 128, 1), 7)]
    np.testing.assert_array_equal(u[:3], np.stack([g] * 3))
    np.testing.assert_array_equal(he[0], np.pad(kernels.delta(7), 7))


def test_never_worse_retries_a_larger_window_first_and_crops_its_kernel(monkeypatch):
    """A kernel that fills its window fails the check; the default first retry is a window 1.5x as
    large, whose kernel comes back cropped to the given size about its centre of mass."""
    from unroll import nonblind
    from unroll.classical import l0

    g, _, h = _photo()
    good = np.asarray(nonblind.deconvolve(g, h))
    k = h.shape[0]
    assert classical.fallback_sizes(k)[0] == 13 == 2 * round((1.5 * k - 1) / 2) + 1
    assert classical.fallback_sizes(27) == (41, 19, 13)
    shifted = np.roll(np.pad(h, 6), (2, -1), axis=(0, 1))  # off-centre in a 21 x 21 window
    calls = []

    def retry(x, size, *args, **kwargs):
        calls.append(size)
        if x.shape[1] != good.shape[0]:
            return jnp.asarray(x), jnp.asarray(kernels.delta(size)[None])
        return jnp.asarray(good[None, ..., None]), jnp.asarray(shifted[None])

    monkeypatch.setattr(l0, "blind_deconvolve", retry)
    u, he, attempt = classical.never_worse(g, g, h, k, retry_sizes=(21, 7))  # h fills its window
    assert calls == [21] and attempt == 1
    np.testing.assert_array_equal(u, good)
    np.testing.assert_allclose(he, h, atol=1e-7)  # recentred and cropped back to k x k
    # a default retry larger than the image allows is skipped, not an error
    calls.clear()
    small = g[:2 * k + 6, :2 * k + 6]
    classical.never_worse(small, small, h, k, retry_sizes=None)
    assert calls and calls[0] < k


@pytest.mark.parametrize("args, message", [
    (["--workdir={tmp}"], "--mode"),
    (["--mode=evaluate", "--workdir={tmp}", "--blur_sizes=15"], "--blur_sizes"),
    (["--mode=evaluate", "--workdir={tmp}", "--kernel_size=8"], "odd"),
    (["--mode=calibrate", "--workdir={tmp}", "--rsscn7_dir={tmp}/none"], "RSSCN7 folder"),
])
def test_never_worse_refuses_bad_flags_in_one_line(tmp_path, args, message):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "experiments.never_worse"] + [a.format(tmp=tmp_path) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def _fresh(code: str, *args) -> str:
    """Run `code` in a new interpreter (an entry point's flags would clash with those already defined
    in this test process) and return its stdout; a failure there fails here with its stderr."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_never_worse_scenes_take_the_camera_shake_generator(tmp_path):
    """`--generator=shake` blurs the evaluation scenes with `kernels.shake`, not `kernels.motion`:
    the same seed gives another kernel, each a kernel of a drawn size."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (tmp_path / split / "field").mkdir(parents=True)
        for i in range(2):
            Image.fromarray((rng.random((80, 80, 3)) * 255).astype(np.uint8)).save(
                tmp_path / split / "field" / f"{i}.jpg")
    code = ("import sys, json\nfrom pathlib import Path\nfrom experiments import never_worse\n"
            "config = dict(mode='evaluate', scenes=2, crop=0, blur_sizes=[9, 13], noise=0.005, "
            "kernel_sizes=[13], rgb_share=0.5, gaussian_share=0.0, seed=0, checkpoint='')\n"
            "out = {g: [ex['kernel'].tolist() for ex in never_worse.make_examples(Path(sys.argv[1]), "
            "dict(config, generator=g))] for g in ('shake', 'motion')}\nprint(json.dumps(out))\n")
    import json

    out = json.loads(_fresh(code, tmp_path))
    shake, motion = [[np.array(k) for k in out[g]] for g in ("shake", "motion")]
    # the first scene's size is drawn before its kernel, so both sets give it the same size
    assert shake[0].shape == motion[0].shape
    assert not np.allclose(shake[0], motion[0])
    for h in shake:
        assert h.shape[0] in (9, 11, 13)
        assert abs(float(h.sum()) - 1) < 1e-5 and (h >= 0).all()


def test_never_worse_reuses_an_earlier_evaluation_of_the_same_scenes_only(tmp_path):
    import json

    config = dict(mode="evaluate", scenes=2, crop=0, blur_sizes=[15, 27], noise=0.005, kernel_sizes=[27],
                  rgb_share=0.3, gaussian_share=0.0, seed=0, generator="shake", checkpoint="")
    rows = [dict(name="a", psnr_plain=1.0, psnr_fallback=2.0, attempt=0)]
    (tmp_path / "evaluate.json").write_text(json.dumps({"config": config, "summary": {"seconds": 7.0},
                                                        "rows": rows}))
    code = ("import sys, json\nfrom pathlib import Path\nfrom experiments import never_worse\n"
            "config = json.loads(sys.argv[2])\nroot = Path(sys.argv[1])\n"
            "print(json.dumps([never_worse._earlier(root, dict(config, checkpoint='motion')),\n"
            "                  never_worse._earlier(root, dict(config, noise=0.01)),\n"
            "                  never_worse._earlier(root / 'none', config)]))\n")
    same, other, missing = json.loads(_fresh(code, tmp_path, json.dumps(config)))
    assert same == [rows, 7.0] and other is None and missing is None


def test_never_worse_calibration_sizes_and_simulated_fallback():
    """`--kernel_sizes` relative to the blur (true, true+N, true*F) and the fallback simulated on
    calibration runs: the first run in order that passes the thresholds, else the input."""
    import json

    rows = [dict(psnr_input=20.0, runs={"a": dict(range_ratio=3.0, kernel_spread=0.1, psnr=10.0),
                                        "b": dict(range_ratio=1.2, kernel_spread=0.22, psnr=25.0),
                                        "c": dict(range_ratio=1.1, kernel_spread=0.1, psnr=19.0)}),
            dict(psnr_input=30.0, runs={"a": dict(range_ratio=1.1, kernel_spread=0.1, psnr=33.0)})]
    code = ("import sys, json\nfrom experiments import never_worse as nw\nrows = json.loads(sys.argv[1])\n"
            "print(json.dumps([[nw.window(s, 13) for s in ('21', 'true', 'true+8', 'true*1.5', 'true*0.7')],\n"
            "                  nw.simulate_fallback(rows, ['a', 'b', 'c'], 1.4, 0.2),\n"
            "                  nw.simulate_fallback(rows, ['a', 'b', 'c'], 1.4, 0.25),\n"
            "                  nw.simulate_fallback(rows, ['c'], 1.0, 0.2)]))\n")
    sizes, strict, loose, none = json.loads(_fresh(code, json.dumps(rows)))
    assert sizes == [21, 13, 21, 19, 9]
    # strict: image 1 skips a (rings) and b (spread 0.22), keeps c (-1 dB); image 2 keeps a (+3 dB)
    assert strict == dict(mean_gain=1.0, worst_gain=-1.0, below_input=1, kept=2)
    assert loose == dict(mean_gain=4.0, worst_gain=3.0, below_input=0, kept=2)
    assert none == dict(mean_gain=0.0, worst_gain=0.0, below_input=0, kept=0)
