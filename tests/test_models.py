"""MGSTNet modules: parameter counts, shapes, reduction to the plain unrolled steps, gradients, overfit.

Everything but the abstract parameter counts uses tiny widths; compiled functions take the model
state through `jax.jit` over `nnx.split` (much faster on CPU than `nnx.jit`) and are shared between
tests where the graph and shapes agree.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from unroll import kernels, losses, ops, steps
from unroll.models import MGSTNet, MGSTNetOutput, blocks, mgstnet

# reduction=2 keeps 2-4 hidden channel-attention units at these widths: with RCAN's 16 there is a
# single one, whose ReLU may be inactive for a whole batch (no gradient into its 1x1 expansion).
TINY = dict(features=8, kernel_features=4, kernel_size=7, reduction=2)
PAPER_PARAMS = 15.23e6


def count_params(**config) -> int:
    """Parameter count from an abstract initialisation (no arrays are allocated)."""
    model = nnx.eval_shape(lambda: MGSTNet(**config))
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract(**config):
    return nnx.eval_shape(lambda: MGSTNet(**config))


def sample_batch(n=2, size=(16, 16), channels=3, kernel_size=7, seed=0):
    """Piecewise-constant sharp images, blurred by Gaussians of different widths (no noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(n, 4, 4, channels)).astype(np.float32)
    sharp = jax.image.resize(jnp.asarray(coarse), (n, *size, channels), "nearest")
    h = jnp.asarray(np.stack([kernels.gaussian(kernel_size, 1.0 + i) for i in range(n)]))
    return sharp, ops.blur(sharp, h), h


# Less LLVM optimisation halves XLA's compile time here and barely changes a tiny model's speed.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_COMPILED = {}


def _compiled(name, graphdef, make, *args):
    """`make(graphdef)` jitted and compiled once per graphdef and argument shapes."""
    key = (name, graphdef, tuple((x.shape, x.dtype) for x in jax.tree.leaves(args)))
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(make(graphdef)).lower(*args).compile(FAST_COMPILE)
    return _COMPILED[key]


def forward(model, g):
    graphdef, state = nnx.split(model)
    make = lambda gd: lambda s, x: nnx.merge(gd, s)(x)
    return _compiled("forward", graphdef, make, state, g)(state, g)


OPTIMIZER = optax.adam(5e-3)


def train_step(graphdef, params, opt_state, rest, sharp, blurred):
    """Compiled Adam step on eq. (21): (params, opt_state, rest, sharp, blurred) ->
    (loss, grads, new params, new opt_state). The gradient tests read `loss, grads` of one call."""
    def make(gd):
        def loss_fn(params, rest, sharp, blurred):
            return losses.mgstnet_loss(nnx.merge(gd, params, rest)(blurred), sharp, blurred)

        def step(params, opt_state, rest, sharp, blurred):
            loss, grads = jax.value_and_grad(loss_fn)(params, rest, sharp, blurred)
            updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
            return loss, grads, optax.apply_updates(params, updates), opt_state
        return step

    return _compiled("train_step", graphdef, make, params, opt_state, rest, sharp, blurred)


def loss_and_grads(model, sharp, blurred):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = OPTIMIZER.init(params)
    step = train_step(graphdef, params, opt_state, rest, sharp, blurred)
    return step(params, opt_state, rest, sharp, blurred)[:2]


# Shared by the gradient and the overfit test (one compilation): one 16x16 RGB image.
TRAIN_CONFIG = dict(stages=2, scales=2, kernel_rcabs=1, image_rcabs=1, **TINY)
TRAIN_BATCH = 1
STEPS = 200


# (a) ---------------------------------------------------------------------------------------------

def test_paper_configuration_parameter_count():
    n = count_params(stages=3, scales=3, kernel_rcabs=2, image_rcabs=2)
    assert abs(n - PAPER_PARAMS) / PAPER_PARAMS < 0.05, n


def test_scale_widths_are_the_papers():
    assert blocks.scale_widths(64, 3) == (64, 96, 128)
    model = abstract(stages=1)
    prox = model.stages.image_prox  # parameters stacked over the stages on axis 0
    assert prox.extractor.body.widths == (64, 96, 128)
    assert prox.extractor.head.kernel.shape == (1, 3, 3, 3, 64)
    assert prox.inverse.tail.kernel.shape == (1, 3, 3, 64, 3)
    assert model.stages.kernel_prox.extractor_head.kernel.shape == (1, 3, 3, 1, 32)


# (b) ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels,size,scales", [(3, (37, 53), 3), (1, (23, 18), 2)])
def test_output_shapes_and_kernel_constraints(channels, size, scales):
    stages = 2
    # No RCABs: shapes do not depend on them, and the graph compiles faster.
    model = MGSTNet(stages=stages, scales=scales, kernel_rcabs=0, image_rcabs=0, channels=channels,
                    **TINY)
    _, g, _ = sample_batch(2, size, channels)
    out = forward(model, g)
    assert isinstance(out, MGSTNetOutput)
    for seq in (out.images, out.kernels, out.kgdm_kernels, out.igdm_images):
        assert len(seq) == stages  # stacked over the stages
    k = TINY["kernel_size"]
    for u, h, s, r in zip(out.images, out.kernels, out.kgdm_kernels, out.igdm_images):
        assert u.shape == r.shape == g.shape
        assert h.shape == s.shape == (2, k, k)
        assert np.all(np.isfinite(u)) and np.all(np.isfinite(h))
        assert np.all(np.asarray(h) >= 0)
        np.testing.assert_allclose(np.sum(h, axis=(1, 2)), 1.0, rtol=1e-5)
    # The result is a pytree: jit returned it, 4 arrays stacked over the stages.
    assert [x.shape[0] for x in jax.tree.leaves(out)] == [stages] * 4


def test_bfloat16_images_and_parameters():
    """Mixed precision: the FFT steps run in float32, the kernels stay float32 and normalised."""
    model = MGSTNet(stages=2, scales=2, kernel_rcabs=0, image_rcabs=0, **TINY)
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
    _, g, _ = sample_batch(1)
    out = forward(model, g.astype(jnp.bfloat16))
    assert out.images[-1].dtype == jnp.bfloat16 and out.kernels[-1].dtype == jnp.float32
    np.testing.assert_allclose(np.sum(out.kernels[-1], axis=(1, 2)), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(out.images[-1], np.float32)))


def test_rejects_wrong_channels_and_bad_config():
    model = abstract(stages=1, channels=1, **TINY)
    with pytest.raises(ValueError):  # checked before any parameter is touched
        model(jnp.zeros((1, 16, 16, 3)))
    for bad in (dict(stages=0), dict(scales=0), dict(kernel_size=8), dict(boundary="wrap"),
                dict(threshold="hard")):
        with pytest.raises(ValueError):
            MGSTNet(**{**TINY, **bad})
    with pytest.raises(ValueError, match="gst_grad must be one of"):
        MGSTNet(**TINY, gst_grad="exact")
    with pytest.raises(ValueError, match="gst_solver must be one of"):
        MGSTNet(**TINY, gst_solver="newton")


def test_gst_solver_halley_keeps_the_parameters_and_nearly_the_output():
    """gst_solver="halley" is one Halley step instead of the paper's 3 fixed-point steps: the same
    parameters (a checkpoint of either loads into the other) and an output that differs only by the
    fixed-point steps' error."""
    config = dict(stages=2, scales=2, kernel_rcabs=0, image_rcabs=1, **TINY)
    paper, halley = (MGSTNet(**config, gst_solver=s, rngs=nnx.Rngs(3)) for s in mgstnet.GST_SOLVERS)
    assert {(t.solver, t.iterations) for t in halley.stages.image_prox.thresholds} == {("halley", 1)}
    assert {(t.solver, t.iterations) for t in paper.stages.image_prox.thresholds} == {("fixed_point", 3)}
    assert jax.tree.all(jax.tree.map(np.array_equal, nnx.state(paper, nnx.Param),
                                     nnx.state(halley, nnx.Param)))
    _, g, _ = sample_batch(1)
    a, b = paper(g).images[-1], halley(g).images[-1]
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3)


def test_gst_grad_implicit_has_the_same_output_and_close_gradients():
    """gst_grad="implicit" differentiates GST_p at the exact prox (shrinkage.gst_implicit): the
    forward pass is the unrolled one, the gradients differ only by the 3 iterations' error."""
    config = dict(stages=2, scales=2, kernel_rcabs=0, image_rcabs=1, **TINY)
    unrolled, implicit = (MGSTNet(**config, gst_grad=m, rngs=nnx.Rngs(3))
                          for m in mgstnet.GST_GRADS)
    assert mgstnet.GST_GRADS == ("unrolled", "implicit")
    assert {t.grad for t in implicit.stages.image_prox.thresholds} == {"implicit"}
    sharp, g, _ = sample_batch(1)
    graphdef_u, params = nnx.split(unrolled)
    graphdef_i, params_i = nnx.split(implicit)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, params_i))  # same parameters

    def loss(graphdef):
        def fn(params):
            out = nnx.merge(graphdef, params)(g)
            return losses.mgstnet_loss(out, sharp, g), out.images[-1]
        return jax.jit(jax.value_and_grad(fn, has_aux=True))

    (loss_u, image_u), grads_u = loss(graphdef_u)(params)
    (loss_i, image_i), grads_i = loss(graphdef_i)(params)
    # The same computation (up to XLA's fusion: float32 rounding).
    np.testing.assert_allclose(image_u, image_i, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_u, loss_i, rtol=1e-6)
    flat_u, flat_i = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
                      for t in (grads_u, grads_i))
    assert np.all(np.isfinite(flat_i)) and np.any(flat_i != flat_u)
    cosine = flat_u @ flat_i / (np.linalg.norm(flat_u) * np.linalg.norm(flat_i))
    assert cosine > 0.99, cosine
    np.testing.assert_allclose(np.linalg.norm(flat_i), np.linalg.norm(flat_u), rtol=0.1)


# (c) ---------------------------------------------------------------------------------------------

def _zero(conv):
    conv.kernel[...] = jnp.zeros_like(conv.kernel[...])
    conv.bias[...] = jnp.zeros_like(conv.bias[...])


def _plain_steps(model, g):
    """The unrolled algorithm without learned priors: KGDM -> eq. (14) -> IGDM, per stage."""
    h = jnp.broadcast_to(jnp.asarray(kernels.uniform(model.kernel_size)), (g.shape[0],) +
                         (model.kernel_size,) * 2)
    u, hs, us, ss = g, [], [], []
    for k in range(model.num_stages):
        stage = model.stage(k)
        s = steps.kernel_step(h, u, g, stage.mu, "symmetric")
        h = steps.normalize_kernel(s)
        u = steps.image_step(u, h, g, stage.rho, "symmetric")
        hs.append(h), us.append(u), ss.append(s)
    return hs, us, ss


@pytest.mark.parametrize("kernel_prox", [True, False])
def test_zeroed_prox_networks_reduce_to_plain_steps(kernel_prox):
    model = MGSTNet(stages=2, scales=2, kernel_rcabs=0, image_rcabs=0, kernel_prox=kernel_prox,
                    **TINY)
    _, g, _ = sample_batch(2, (19, 16))
    # Move the step sizes off their initial values so that they are really read from the stages.
    stages = model.stages  # every parameter stacked over the stages on axis 0
    stages.raw_mu[...] = stages.raw_mu[...] + 0.5 * jnp.arange(1, 3)
    stages.raw_rho[...] = stages.raw_rho[...] - 0.3 * jnp.arange(1, 3)
    hs, us, ss = _plain_steps(model, g)

    before = forward(model, g)  # the untrained priors do change the result
    assert not np.allclose(before.images[-1], us[-1], atol=1e-5)
    if kernel_prox:
        assert not np.allclose(before.kernels[-1], hs[-1], atol=1e-6)

    _zero(stages.image_prox.inverse.tail)          # F~ contributes 0 -> u_k = r_k (every k)
    if kernel_prox:
        _zero(stages.kernel_prox.inverse_tail)     # G~ contributes 0 -> h_{k-1/2} = s_k
    else:
        assert stages.kernel_prox is None
    out = forward(model, g)
    for k in range(2):
        np.testing.assert_allclose(out.kgdm_kernels[k], ss[k], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(out.kernels[k], hs[k], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(out.images[k], us[k], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out.igdm_images[k], us[k], rtol=1e-4, atol=1e-6)


# (d) ---------------------------------------------------------------------------------------------

def test_loss_gradients_finite_and_nonzero_for_every_parameter():
    model = MGSTNet(**TRAIN_CONFIG)
    sharp, g, _ = sample_batch(TRAIN_BATCH)
    loss, grads = loss_and_grads(model, sharp, g)
    assert np.isfinite(loss)
    flat = jax.tree_util.tree_leaves_with_path(grads)
    assert len(flat) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    for path, leaf in flat:
        name = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(leaf)), name
        assert np.any(leaf != 0), name


def test_remat_scans_checkpointed_stages_with_the_same_loss_and_gradients():
    sharp, g, _ = sample_batch(TRAIN_BATCH)
    config = dict(stages=2, scales=2, kernel_rcabs=0, image_rcabs=0, **TINY)  # compiles faster
    plain, remat = MGSTNet(**config), MGSTNet(**config, remat=True)  # same parameters
    loss, grads = loss_and_grads(plain, sharp, g)
    loss_remat, grads_remat = loss_and_grads(remat, sharp, g)
    np.testing.assert_allclose(loss_remat, loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_remat)):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5 * float(np.max(np.abs(a))))
    # Traced only: one scan over the stages in both, whose body is checkpointed as a whole (a remat2
    # primitive holding the stage's convolutions) only with remat. (GST's own small checkpoints, one
    # per scale, are in both.)
    for model, checkpoints in ((plain, 0), (remat, 1)):
        graphdef, state = nnx.split(model)
        jaxpr = jax.make_jaxpr(lambda s, gd=graphdef: nnx.merge(gd, s)(g).images)(state).jaxpr
        (scan,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
        assert scan.params["length"] == 2
        body = scan.params["jaxpr"].jaxpr
        stage_checkpoints = [e for e in body.eqns if e.primitive.name == "remat2"
                             and "conv_general_dilated" in str(e.params["jaxpr"])]
        assert len(stage_checkpoints) == checkpoints


def test_unrolled_stages_have_no_loop_and_the_same_loss_and_gradients():
    sharp, g, _ = sample_batch(TRAIN_BATCH)
    config = dict(stages=3, scales=2, kernel_rcabs=0, image_rcabs=0, **TINY)

    def images_and_hlo(model):
        graphdef, state = nnx.split(model)
        compiled = jax.jit(lambda s: nnx.merge(graphdef, s)(g).images).lower(state).compile()
        return compiled(state), compiled.as_text()

    rolled = MGSTNet(**config)
    rolled_images, hlo = images_and_hlo(rolled)
    assert " while(" in hlo
    ref_loss, ref_grads = loss_and_grads(rolled, sharp, g)
    for unroll in (0, 2):  # every stage; two per loop iteration (3 stages: one full, one partial)
        model = MGSTNet(**config, stage_unroll=unroll)  # same parameters (same seed)
        images, hlo = images_and_hlo(model)
        assert " while(" not in hlo, unroll  # 3 stages, at most 2 per iteration: XLA drops 1-trip loops
        np.testing.assert_allclose(images, rolled_images, rtol=1e-5, atol=1e-6)
        loss, grads = loss_and_grads(model, sharp, g)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        if unroll == 0:
            for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(grads)):
                np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5 * float(np.max(np.abs(a))))


@pytest.mark.parametrize("kwargs, match", [
    (dict(stage_unroll=-1), "stage_unroll must be 0"),
    (dict(stage_unroll=1.5), "stage_unroll must be 0"),
    (dict(stage_unroll=0, remat=True), "remat needs the rolled stage loop"),
])
def test_stage_unroll_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MGSTNet(stages=2, scales=1, kernel_rcabs=0, image_rcabs=0, **TINY, **kwargs)


# (e) ---------------------------------------------------------------------------------------------

def test_tiny_model_overfits_one_batch():
    model = MGSTNet(**TRAIN_CONFIG)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    sharp, g, _ = sample_batch(TRAIN_BATCH)
    opt_state = OPTIMIZER.init(params)
    step = train_step(graphdef, params, opt_state, rest, sharp, g)
    history = []
    for _ in range(STEPS):
        loss, _, params, opt_state = step(params, opt_state, rest, sharp, g)
        history.append(loss)
    history = np.asarray(history)
    assert np.all(np.isfinite(history))
    assert history[0] / np.min(history[-10:]) > 5, (history[0], history[-10:])


# (f) ---------------------------------------------------------------------------------------------

def _params(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _rcab_params(width, reduction=TINY["reduction"]):
    hidden = max(1, width // reduction)
    return 2 * (9 * width * width + width) + (width * hidden + hidden) + (hidden * width + width)


def test_kernel_rcabs_axis():
    counts = [count_params(stages=2, scales=1, kernel_rcabs=r, **TINY) for r in (1, 2, 3)]
    # Each kernel RCAB appears in G and in G~ of every stage.
    per_rcab = 2 * 2 * _rcab_params(TINY["kernel_features"])
    assert counts[1] - counts[0] == counts[2] - counts[1] == per_rcab


def test_image_rcabs_axis():
    counts = [count_params(stages=1, scales=2, image_rcabs=r, **TINY) for r in (0, 1, 2, 3)]
    widths = blocks.scale_widths(TINY["features"], 2)
    # Per level: encoder and decoder of F and of F~.
    per_rcab = 4 * sum(_rcab_params(w) for w in widths)
    assert np.all(np.diff(counts) == per_rcab), counts


def test_scales_axis():
    counts = []
    for scales in (1, 2, 3):
        model = abstract(stages=1, scales=scales, **TINY)
        counts.append(_params(model))
        prox = model.stages.image_prox
        assert len(prox.thresholds) == scales
        assert all(isinstance(t, mgstnet.GST) for t in prox.thresholds)
        assert len(prox.extractor.body.widths) == scales == len(prox.inverse.body.widths)
        assert prox.multiple == 2 ** (scales - 1)
    assert counts[0] < counts[1] < counts[2], counts


def test_stages_axis():
    g = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    counts = []
    for stages in (1, 3):
        model = abstract(stages=stages, scales=1, **TINY)
        counts.append(_params(model))
        graphdef, state = nnx.split(model)
        out = jax.eval_shape(lambda s, x, gd=graphdef: nnx.merge(gd, s)(x), state, g)
        assert len(out.images) == len(out.kernels) == len(out.kgdm_kernels) == stages
        assert model.num_stages == stages
    # Stages do not share parameters: the count is linear in the number of stages.
    assert counts[1] == 3 * counts[0]


def test_stages_do_not_share_parameters():
    model = MGSTNet(stages=2, scales=1, kernel_rcabs=1, image_rcabs=1, **TINY)
    a, b = (model.stage(k).image_prox.extractor.head.kernel[...] for k in range(2))
    assert a.shape == b.shape and not np.allclose(a, b)


def test_threshold_and_kernel_prox_ablations():
    base = dict(stages=1, scales=3, kernel_rcabs=2, **TINY)
    gst, soft = abstract(**base), abstract(**base, threshold="soft")
    assert all(isinstance(t, mgstnet.SoftThreshold) for t in soft.stages.image_prox.thresholds)
    # GST has one p0 more than the soft threshold per scale.
    assert _params(gst) - _params(soft) == 3
    no_kpm = abstract(**base, kernel_prox=False)
    assert no_kpm.stages.kernel_prox is None
    # KPM: conv3x3 1 -> c, 2 + 2 RCABs, conv3x3 c -> 1 and its threshold.
    c = TINY["kernel_features"]
    kpm = (9 * c + c) + 4 * _rcab_params(c) + (9 * c + 1) + 1
    assert _params(gst) - _params(no_kpm) == kpm


def test_learned_scalars_are_named_properties_of_the_stacked_stages():
    """stage.mu, stage.rho and each threshold's theta and p, stacked over the stages ([K])."""
    model = MGSTNet(stages=3, scales=2, kernel_rcabs=0, image_rcabs=0, **TINY)
    stages = model.stages
    stages.raw_mu[...] = jnp.asarray([0.0, 1.0, 2.0])
    np.testing.assert_allclose(stages.mu, jax.nn.softplus(jnp.asarray([0.0, 1.0, 2.0])), rtol=1e-6)
    assert stages.rho.shape == stages.kernel_prox.threshold.theta.shape == (3,)
    for t in stages.image_prox.thresholds:
        assert t.theta.shape == t.p.shape == (3,)
    for k in range(3):
        stage = model.stage(k)
        np.testing.assert_allclose(stage.mu, stages.mu[k], rtol=1e-6)
        np.testing.assert_allclose(stage.image_prox.thresholds[1].p,
                                   stages.image_prox.thresholds[1].p[k], rtol=1e-6)


def test_learned_scalars_start_at_documented_values():
    model = MGSTNet(stages=1, scales=2, kernel_rcabs=1, image_rcabs=1, **TINY)
    stage = model.stage(0)
    np.testing.assert_allclose(stage.mu, mgstnet.MU_INIT, rtol=1e-6)
    np.testing.assert_allclose(stage.rho, mgstnet.RHO_INIT, rtol=1e-6)
    for t in stage.image_prox.thresholds:
        np.testing.assert_allclose(t.theta, mgstnet.THETA_INIT, rtol=1e-5)
        np.testing.assert_allclose(t.p, mgstnet.P_INIT, rtol=1e-6)
    # A large negative raw value still gives a positive step.
    stage.raw_mu[...] = jnp.asarray(-30.0)
    assert stage.mu > 0


@pytest.mark.parametrize("kernel,padding,images", [
    ((3, 3), "SAME", 3), ((3, 3), "SAME", 1), ((1, 1), "SAME", 3), ((4, 2), "SAME", 3),
    ((3, 5), ((0, 2), (1, 3)), 3), ((3, 5), ((0, 2), (1, 3)), 1), ((3, 3), "VALID", 3)])
def test_conv_gradients_equal_jax_convolution_gradients(kernel, padding, images):
    """blocks.conv_general_dilated (gradients as plain NHWC x HWIO convolutions, which XLA:CPU keeps
    fast inside the stage scan) against JAX's own convolution and its autodiff, inside a scan; one
    image takes another path to the channels-first copy of x."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(images, 9, 8, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(2, *kernel, 3, 3)), jnp.float32)  # two scan steps
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv_fn, w, x):
        def body(c, wk):
            y = conv_fn(c, wk, (1, 1), padding, dimension_numbers=dn)
            return jnp.tanh(y[:, :9, :8] if y.shape[1:3] != (9, 8) else y), None
        if padding == "VALID":  # shapes shrink: one step, no scan
            return jnp.sum(jnp.sin(body(x, w[0])[0]))
        return jnp.sum(jnp.sin(jax.lax.scan(body, x, w)[0]))

    ours = jax.jit(jax.value_and_grad(lambda w, x: loss(blocks.conv_general_dilated, w, x), (0, 1)))
    ref = jax.jit(jax.value_and_grad(lambda w, x: loss(jax.lax.conv_general_dilated, w, x), (0, 1)))
    (v, (gw, gx)), (v_ref, (gw_ref, gx_ref)) = ours(w, x), ref(w, x)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(gw_ref))))
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(gx_ref))))


def test_custom_convolution_gradients_on_cpu_only(monkeypatch):
    """The custom VJP is for XLA:CPU; traced for another backend, the convolution is JAX's own."""
    x, w = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))
    dn = ("NHWC", "HWIO", "NHWC")

    def traced():
        return str(jax.make_jaxpr(lambda x, w: blocks.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=dn))(x, w))

    assert "custom_vjp_call" in traced()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "custom_vjp_call" not in traced() and "conv_general_dilated" in traced()


def test_pointwise_convolutions_are_dots_on_cpu():
    """A 1x1 convolution is traced as a dot (its weight gradient one GEMM); the gradient test above
    checks its values against JAX's convolution. A padded 1x1 one stays a convolution."""
    x, w = jnp.ones((1, 8, 8, 2)), jnp.ones((1, 1, 2, 4))
    dn = ("NHWC", "HWIO", "NHWC")

    def traced(padding):
        return str(jax.make_jaxpr(lambda x, w: blocks.conv_general_dilated(
            x, w, (1, 1), padding, dimension_numbers=dn))(x, w))

    assert "dot_general" in traced("SAME") and "conv_general_dilated" not in traced("SAME")
    assert "custom_vjp_call" in traced(((1, 1), (0, 0)))


@pytest.mark.parametrize("size", [(2, 4), (6, 10), (16, 8), (2, 1)])
def test_resampling_stencils_equal_jax_image_resize(size):
    """blocks.halve / double (the encoder-decoder's x0.5 / x2) against jax.image.resize's
    antialiased bilinear, ends included (length 2: both ends at one output), their gradients (the
    custom adjoint stencils) against the resize's, and forward mode under the switch."""
    rng = np.random.default_rng(sum(size))
    x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
    h, w = size
    cases = [(lambda x: blocks.halve(blocks.halve(x, 1), 2), (2, h // 2, w // 2, 3)),
             (lambda x: blocks.double(blocks.double(x, 1), 2), (2, 2 * h, 2 * w, 3))]
    cases = cases[w % 2:]  # length 1: double only
    for stencil, shape in cases:
        def resize(x, shape=shape):
            return jax.image.resize(x, shape, "bilinear")
        np.testing.assert_allclose(stencil(x), resize(x), rtol=1e-6, atol=1e-6)
        dy = jnp.asarray(rng.normal(size=shape), jnp.float32)
        np.testing.assert_allclose(jax.vjp(stencil, x)[1](dy)[0], jax.vjp(resize, x)[1](dy)[0],
                                   rtol=1e-5, atol=1e-5)
        # The gradients are custom adjoint stencils: forward mode needs the switch.
        with pytest.raises(TypeError, match="forward-mode"):
            jax.jvp(stencil, (x,), (x,))
        with blocks.forward_mode_convolutions():
            np.testing.assert_allclose(jax.jvp(stencil, (x,), (x,))[1], resize(x),
                                       rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="even length"):
        blocks.halve(jnp.ones((1, 5, 4, 1)), 1)
    with pytest.raises(ValueError, match="factor"):
        blocks.Resample(3, 3, 3.0, rngs=nnx.Rngs(0))


def test_forward_mode_through_the_network_under_forward_mode_convolutions():
    """jax.jvp of MGSTNet (custom_vjp convolutions have no forward mode) inside the switch, against
    the reverse mode of the fast convolutions: <J v, w> = <v, J^T w>."""
    model = MGSTNet(stages=2, scales=1, kernel_rcabs=0, image_rcabs=0, **TINY)
    graphdef, state = nnx.split(model)
    _, g, _ = sample_batch(1, (12, 12))
    rng = np.random.default_rng(1)
    v, w = (jnp.asarray(rng.normal(size=g.shape), jnp.float32) for _ in range(2))
    f = lambda x: nnx.merge(graphdef, state)(x).images[-1]  # noqa: E731
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(f, (g,), (v,))
    with blocks.forward_mode_convolutions():
        _, jv = jax.jvp(f, (g,), (v,))
    (jtw,) = jax.vjp(f, g)[1](w)
    np.testing.assert_allclose(jnp.vdot(jv, w), jnp.vdot(v, jtw), rtol=1e-4)


def test_registry_passes_gst_grad_and_solver_to_every_gst():
    from unroll.config import Config
    from unroll.models import registry

    for gst_grad, gst_solver in zip(mgstnet.GST_GRADS, mgstnet.GST_SOLVERS[::-1]):
        config = Config(stages=2, scales=2, kernel_rcabs=0, image_rcabs=0, features=4,
                        kernel_features=2, kernel_size=5, gst_grad=gst_grad, gst_solver=gst_solver)
        model = nnx.eval_shape(lambda config=config: registry.build(config))
        assert {(t.grad, t.solver) for t in model.stages.image_prox.thresholds} == {(gst_grad, gst_solver)}
