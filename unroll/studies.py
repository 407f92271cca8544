"""Gradient studies of MGSTNet, with `jax.grad`, `jax.jvp` / `jax.linearize` and `jax.vjp`.

1. Which stages learn: the norm of the training loss's gradient with respect to each stage's
   parameters, split into the kernel prox (KPM, eq. 12), the image prox (IPMM, eq. 18) and the learned
   scalars (mu_k, rho_k, the thresholds theta and the GST exponents p).
2. Hypergradients: the derivative of the final PSNR and of the loss (eq. 21) with respect to each
   learned scalar *as the network uses it* (mu = softplus(raw), p = sigmoid(p0), ...), by the chain
   rule.
3. Input sensitivity of g -> u_k per stage k: the RMS gain of random perturbations (JVPs, ~ the
   Jacobian's Frobenius norm / sqrt(n)) and the Lipschitz constant at g (its spectral norm) by power
   iteration on J^T J (one JVP and one VJP per iteration).
4. GST_p: the derivatives of the 3-iteration fixed point unrolled (`shrinkage.gst`) and by the
   implicit function theorem (`shrinkage.gst_implicit`), against the converged exact prox; their cost.

Functions are pure: `(graphdef, params, batch or images, config) -> arrays` (jit them with the
graphdef and config closed over), so notebooks can call them on any MGSTNet and data; graphdef and
params are `nnx.split(model)` (`unroll.models.registry.build_split(config)`, or a loaded checkpoint's).
The learned scalars are read by name from the stacked stage module `MGSTNet.stages` (`mu`, `rho`,
each threshold's `theta` and `p`), every one an array over the K stages.
A batch is a dict with "blurred" and "sharp" `[N, H, W, C]` (what `unroll.data` yields).
The model is assumed to treat the images of a batch independently (true of MGSTNet: no batch
statistics), so the Jacobian of g -> u_k is block diagonal and every image gets its own estimate.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from unroll import losses, metrics, shrinkage
from unroll.models import blocks
from unroll.models.mgstnet import GST, MGSTNet

GROUPS = ("kernel_prox", "image_prox", "scalars")
# The learned scalars: mu_k, rho_k, theta_1k (KPM's soft threshold), theta_2k,i and p_k,i (IPMM's GST
# per scale i); stored raw, used as softplus(raw), and p = sigmoid(p0).
SCALARS = ("mu", "rho", "beta", "kernel_theta", "image_theta", "image_p")


def _network(graphdef, params) -> MGSTNet:
    model = nnx.merge(graphdef, params)
    if not isinstance(model, MGSTNet):
        raise ValueError(f"the gradient studies are of MGSTNet, got {type(model).__name__}")
    return model


# ----------------------------------------------------------------------------------------------------
# Parameters by stage and group.


def _stage_groups(tree) -> dict:
    """A params-shaped tree's stage leaves (stacked over the stages on axis 0) by group, read with
    the attribute names of `mgstnet.Stage`: {group: subtree}; the groups partition the leaves."""
    stage = dict(nnx.to_pure_dict(tree)["stages"])
    kernel = dict(stage.pop("kernel_prox", None) or {})
    image = dict(stage.pop("image_prox"))
    step = stage.pop("raw_rho") if "raw_rho" in stage else stage.pop("raw_beta")  # the image step's
    scalars = [stage.pop("raw_mu"), step, kernel.pop("threshold", {}), image.pop("thresholds")]
    if stage:
        raise ValueError(f"unexpected stage parameters {sorted(stage)}")
    return {"kernel_prox": kernel, "image_prox": image, "scalars": scalars}


def stage_group_norms(tree) -> dict:
    """L2 norms of a params-shaped tree (parameters or gradients) per stage and group.

    Returns {group: [K]} for the GROUPS (0 where a stage has none, e.g. kernel_prox=False) and
    "total" (all of a stage's parameters; the groups partition them).
    """
    def squares(subtree):
        total = 0.0
        for leaf in jax.tree.leaves(subtree):
            leaf = leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32))  # bf16 squares overflow
            total = total + jnp.sum(jnp.square(leaf), axis=tuple(range(1, leaf.ndim)))
        return total

    groups = _stage_groups(tree)
    k = jax.tree.leaves(groups["scalars"])[0].shape[0]
    sq = {g: jnp.broadcast_to(squares(groups[g]), (k,)) for g in GROUPS}
    norms = {g: jnp.sqrt(v) for g, v in sq.items()}
    norms["total"] = jnp.sqrt(sum(sq.values()))
    return norms


# ----------------------------------------------------------------------------------------------------
# Objectives.


def _objectives(graphdef, params, batch, config):
    """(training loss, eq. 21; final PSNR) from one forward pass. The PSNR is not clipped to
    [0, 1]: clipping would zero the derivative at saturated pixels."""
    out = _network(graphdef, params)(batch["blurred"])
    loss = losses.mgstnet_loss(out, batch["sharp"], batch["blurred"], alpha=config.alpha,
                               boundary=config.boundary)
    return loss, jnp.mean(metrics.psnr(out.images[-1], batch["sharp"]))


def training_loss(graphdef, params, batch, config):
    """The trainer's loss (eq. 21) of `batch`, a scalar."""
    return _objectives(graphdef, params, batch, config)[0]


def loss_and_psnr_grads(graphdef, params, batch, config) -> dict:
    """{"loss": (value, grads), "psnr": (value, grads)}, grads shaped like `params`.

    One forward pass and one backward pass vmapped over the two cotangents.
    """
    values, pullback = jax.vjp(lambda p: jnp.stack(_objectives(graphdef, p, batch, config)), params)
    (grads,) = jax.vmap(pullback)(jnp.eye(2, dtype=values.dtype))
    return {name: (values[i], jax.tree.map(lambda g, i=i: g[i], grads))
            for i, name in enumerate(("loss", "psnr"))}


def stage_grad_norms(graphdef, params, batch, config) -> dict:
    """`stage_group_norms` of the training loss's gradient: {group: [K]}."""
    return stage_group_norms(jax.grad(training_loss, argnums=1)(graphdef, params, batch, config))


# ----------------------------------------------------------------------------------------------------
# Learned scalars and hypergradients.


def _image_thresholds(stages) -> list:
    return list(stages.image_prox.thresholds)


def _step_name(stages) -> str:
    """The image step's learned scalar: rho (IGDM, eq. 17) or beta (the closed-form step)."""
    return "rho" if stages.image_step == "gradient" else "beta"


def _values(stages) -> dict:
    """The learned scalars as the network uses them, by their names on the stacked stage module."""
    values = {"mu": stages.mu, _step_name(stages): getattr(stages, _step_name(stages))}
    if stages.kernel_prox is not None:
        values["kernel_theta"] = stages.kernel_prox.threshold.theta
    thresholds = _image_thresholds(stages)
    values["image_theta"] = jnp.stack([t.theta for t in thresholds], axis=1)
    if all(isinstance(t, GST) for t in thresholds):
        values["image_p"] = jnp.stack([t.p for t in thresholds], axis=1)
    return values


def _raw(stages) -> dict:
    """The stored (unconstrained) parameters behind `_values`, same names and shapes."""
    raw = {"mu": stages.raw_mu[...], _step_name(stages): getattr(stages, "raw_" + _step_name(stages))[...]}
    if stages.kernel_prox is not None:
        raw["kernel_theta"] = stages.kernel_prox.threshold.raw_theta[...]
    thresholds = _image_thresholds(stages)
    raw["image_theta"] = jnp.stack([t.raw_theta[...] for t in thresholds], axis=1)
    if all(isinstance(t, GST) for t in thresholds):
        raw["image_p"] = jnp.stack([t.p0[...] for t in thresholds], axis=1)
    return raw


def scalar_values(graphdef, params) -> dict:
    """The learned scalars as the network uses them: {"mu", "rho" (or "beta"), "kernel_theta": [K],
    "image_theta", "image_p": [K, scales]} (those the model has)."""
    return _values(_network(graphdef, params).stages)


def scalar_gradients(graphdef, params, grads) -> dict:
    """Chain rule dJ/dv = (dJ/draw) / (dv/draw) for every learned scalar v (shapes of scalar_values).

    `grads` (shaped like `params`) gives dJ/draw. Each v is an elementwise function of its own raw
    parameter (softplus, or sigmoid for p), so dv/draw is the JVP of `scalar_values` in the all-ones
    direction.
    """
    ones = jax.tree.map(jnp.ones_like, params)
    _, slopes = jax.jvp(lambda p: scalar_values(graphdef, p), (params,), (ones,))
    raw_grads = _raw(_network(graphdef, grads).stages)
    return {name: raw_grads[name] / slope for name, slope in slopes.items()}


def hypergradients(graphdef, params, batch, config) -> dict:
    """{"loss": {scalar: dLoss/dv}, "psnr": {scalar: dPSNR/dv}} for every learned scalar v."""
    grads = loss_and_psnr_grads(graphdef, params, batch, config)
    return {name: scalar_gradients(graphdef, params, g) for name, (_, g) in grads.items()}


# ----------------------------------------------------------------------------------------------------
# Input sensitivity of g -> u_k.


def _image_norms(x):
    """Per-image L2 norm over the trailing (H, W, C) axes."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=(-3, -2, -1)))


def _normalise(v):
    return v / jnp.maximum(_image_norms(v), jnp.finfo(v.dtype).tiny)[..., None, None, None]


def stage_outputs(graphdef, params, g, config=None):
    """u_1..u_K stacked `[K, N, H, W, C]`."""
    return _network(graphdef, params)(g).images


def _linearize_stages(graphdef, params, g):
    """(u_1..u_K stacked, their JVP in g). Forward mode: the convolutions use JAX's own rules, and
    GST_p is differentiated through its iterations (`gst_grad="implicit"` is reverse mode only;
    both have the same value)."""
    def stage_images(g):
        model = _network(graphdef, params)
        for _, module in nnx.iter_modules(model):
            if isinstance(module, GST):
                module.grad = "unrolled"
        return model(g).images

    with blocks.forward_mode_convolutions():
        return jax.linearize(stage_images, g)


def stage_sensitivity(graphdef, params, g, config, key, probes: int = 4, iterations: int = 20):
    """One linearisation of g -> (u_1..u_K) for both estimates:
    {"outputs": u_k [K, N, H, W, C], "noise_gain", "lipschitz": [K, N]}.

    noise_gain: RMS over `probes` Gaussian directions v of ||J_k v|| / ||v||; E ||J v||^2 / ||v||^2 =
    ||J_k||_F^2 / n, how much white noise in g is amplified in u_k on average.
    lipschitz: power-iteration estimate of the spectral norm of J_k at g (the worst direction):
    (P1) v <- J_k^T J_k v / ||J_k^T J_k v||, one JVP and one VJP (the transposed linearisation) per
    step, per image; (P2) sigma_max ~ ||J_k v|| with ||v|| = 1: a lower bound, whose error decays
    like (sigma_2 / sigma_1)^(2 n), slowly when the top singular values cluster (measured 1e-3 after
    100 steps on the tiny test model). All stages at once (vmapped over a one-hot stage selector).
    """
    stacked, f_jvp = _linearize_stages(graphdef, params, g)
    k_noise, k_power = jax.random.split(key)
    return {"outputs": stacked, "noise_gain": _noise_gains(f_jvp, g, k_noise, probes),
            "lipschitz": _power_iteration(f_jvp, stacked.shape[0], g, k_power, iterations)}


def _noise_gains(f_jvp, g, key, probes):
    directions = jax.random.normal(key, (probes,) + g.shape, g.dtype)
    ratios = jax.vmap(lambda v: _image_norms(f_jvp(v)) / _image_norms(v))(directions)
    return jnp.sqrt(jnp.mean(jnp.square(ratios), axis=0))


def _power_iteration(f_jvp, num_stages, g, key, iterations):
    f_vjp = jax.linear_transpose(f_jvp, g)

    def power(select, v):
        def jk(v):  # J_k v, [N, H, W, C]
            return jnp.tensordot(select, f_jvp(v), axes=1)

        def step(_, v):  # eq. (P1): v <- J_k^T J_k v / ||J_k^T J_k v||
            (w,) = f_vjp(select[:, None, None, None, None] * jk(v)[None])
            return _normalise(w)

        v = lax.fori_loop(0, iterations, step, _normalise(v))
        return _image_norms(jk(v))  # eq. (P2): sigma ~ ||J_k v||, ||v|| = 1

    starts = jax.random.normal(key, (num_stages,) + g.shape, g.dtype)
    return jax.vmap(power)(jnp.eye(num_stages, dtype=g.dtype), starts)


# ----------------------------------------------------------------------------------------------------
# GST_p: unrolled against implicit differentiation.


def gst_derivatives(method: str, y, theta, p, iterations: int, delta: float = 1e-5):
    """Elementwise dx/dy, dx/dtheta, dx/dp of x = GST_p(y, theta) (theta, p scalars or y-shaped).

    `method`: "unrolled" (`shrinkage.gst`) or "implicit" (`shrinkage.gst_implicit`). GST acts
    elementwise, so the gradient of sum(GST) with respect to y-shaped theta and p is the derivative
    of each element.
    """
    fn = {"unrolled": shrinkage.gst, "implicit": shrinkage.gst_implicit}[method]
    theta, p = jnp.broadcast_to(theta, y.shape), jnp.broadcast_to(p, y.shape)
    return jax.grad(lambda *a: jnp.sum(fn(*a, iterations, delta)), argnums=(0, 1, 2))(y, theta, p)


def _gst_samples(num: int, seed: int):
    """z ~ N(0, 2^2), y = tau z: 38 % below the threshold, many just above it (the hard part)."""
    return 2 * np.random.default_rng(seed).normal(size=num)


def _relative_error(x, ref):
    return jnp.linalg.norm(x - ref) / jnp.maximum(jnp.linalg.norm(ref), 1e-300)


def gst_gradient_errors(theta: float, p: float, iterations=(1, 2, 3, 5, 10, 20), delta: float = 1e-5,
                        num: int = 4096, seed: int = 0, reference_iterations: int = 80) -> dict:
    """Relative L2 errors (over `num` samples) of the derivatives in y, theta and p of the unrolled
    and implicit GST with `delta` and each iteration count, against the exact prox (delta = 0,
    `reference_iterations` fixed-point steps: the contraction factor at the root is 1 - F_S <= p/2
    (shrinkage.py, eq. I2), so 80 steps are converged to float64 rounding), in float64.
    "reference_vs_finite_differences" checks that reference against central differences of the
    converged prox (step 1e-6).
    """
    with jax.enable_x64(True):
        table = _gst_error_table(_gst_samples(num, seed), np.float64(theta), np.float64(p),
                                 tuple(iterations), delta, reference_iterations)
        return {"theta": float(theta), "p": float(p), "delta": delta, "iterations": list(iterations),
                "reference_iterations": reference_iterations, "samples": num} | _tolist(table)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _gst_error_table(z, theta, p, iterations, delta, reference_iterations):
    """Every comparison of `gst_gradient_errors` in one compilation (y = tau z)."""
    names = ("y", "theta", "p")
    tau = shrinkage.gst_threshold(theta, p)
    y = z * tau
    ref = gst_derivatives("unrolled", y, theta, p, reference_iterations, 0.0)
    table = {"fraction_kept": jnp.mean(jnp.abs(y) > tau),
             "reference_vs_finite_differences": dict(zip(names, _fd_errors(
                 y, theta, p, ref, reference_iterations)))}
    for method in ("unrolled", "implicit"):
        errors = [[_relative_error(d, r) for d, r in
                   zip(gst_derivatives(method, y, theta, p, n, delta), ref)] for n in iterations]
        table[method] = {name: jnp.stack([e[i] for e in errors]) for i, name in enumerate(names)}
    return table


def _fd_errors(y, theta, p, ref, iterations, step: float = 1e-6):
    """Central differences (relative steps) of the converged exact prox against `ref`, per argument.

    The prox jumps at |y| = tau (by S_tau): elements within 1e-4 tau of the threshold, where a step
    may cross it, are left out.
    """
    args = [y, jnp.full_like(y, theta), jnp.full_like(y, p)]
    tau = shrinkage.gst_threshold(theta, p)
    smooth = jnp.abs(jnp.abs(y) - tau) > 1e-4 * tau
    steps = [step * tau, step * theta, step * jnp.minimum(p, 1 - p)]
    errors = []
    for i in range(3):
        plus, minus = list(args), list(args)
        plus[i], minus[i] = args[i] + steps[i], args[i] - steps[i]
        fd = (shrinkage.gst(*plus, iterations, 0.0) - shrinkage.gst(*minus, iterations, 0.0)) / (
            2 * steps[i])
        errors.append(_relative_error(jnp.where(smooth, fd, 0), jnp.where(smooth, ref[i], 0)))
    return errors


def gst_cost(shape=(8, 128, 128, 64), iterations: int = 3, delta: float = 1e-5, repeats: int = 3,
             seed: int = 0) -> dict:
    """Seconds (median of `repeats`) and compiled memory of jit(value_and_grad) of 1/2 ||GST(y)||^2
    with respect to y `shape` (float32) and per-channel theta, p, for both methods."""
    theta = np.full(shape[-1:], 0.01, np.float32)
    p = np.full(shape[-1:], 0.5, np.float32)
    tau = float(jax.jit(shrinkage.gst_threshold)(theta[0], p[0]))
    y = (2 * tau * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)
    out = {"shape": list(shape), "iterations": iterations}
    for method, fn in (("unrolled", shrinkage.gst), ("implicit", shrinkage.gst_implicit)):
        def loss(y, t, q, fn=fn):
            return 0.5 * jnp.sum(jnp.square(fn(y, t, q, iterations, delta)))

        t0 = time.perf_counter()
        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(y, theta, p).compile()
        compile_seconds = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(y, theta, p))
            times.append(time.perf_counter() - t0)
        mem = compiled.memory_analysis()
        out[method] = {"seconds": float(np.median(times)), "compile_seconds": compile_seconds,
                       "temp_bytes": int(mem.temp_size_in_bytes),
                       "argument_bytes": int(mem.argument_size_in_bytes),
                       "output_bytes": int(mem.output_size_in_bytes),
                       "peak_bytes": int(getattr(mem, "peak_memory_in_bytes", 0) or 0)}
    return out


# ----------------------------------------------------------------------------------------------------
# The whole study and its pictures.


def run_study(graphdef, params, config, train_batches, eval_batch, *, power_iterations: int = 20,
              probes: int = 4, seed: int = 0, gst_pairs=(), gst_iterations=(1, 2, 3, 5, 10, 20),
              gst_samples: int = 4096, gst_reference_iterations: int = 80,
              gst_shape=(8, 128, 128, 64), gst_repeats: int = 3) -> dict:
    """Every study on `train_batches` (a list of batches) and `eval_batch`; a JSON-ready dict.

    `gst_pairs`: (theta, p, label) triples for the GST comparison (`learned_gst_pairs` gives the
    model's own); `gst_shape=None` skips the cost measurement.
    """
    _network(graphdef, params)  # an MGSTNet
    grads_fn = jax.jit(lambda params, batch: loss_and_psnr_grads(graphdef, params, batch, config))
    param_norms = stage_group_norms(params)
    results = {"scalars": _tolist(scalar_values(graphdef, params)),
               "param_norms": _tolist(param_norms), "timings": {}}

    t0 = time.perf_counter()
    for name, batches in (("train", train_batches), ("eval", [eval_batch])):
        per_batch = [grads_fn(params, jax.tree.map(jnp.asarray, b)) for b in batches]
        norms = [stage_group_norms(g["loss"][1]) for g in per_batch]
        mean_norms = {k: np.mean([np.asarray(n[k]) for n in norms], axis=0) for k in norms[0]}
        hyper = [{obj: scalar_gradients(graphdef, params, g[obj][1]) for obj in ("loss", "psnr")}
                 for g in per_batch]
        results[name] = {
            "num_batches": len(batches), "images": int(sum(len(b["blurred"]) for b in batches)),
            "loss": float(np.mean([float(g["loss"][0]) for g in per_batch])),
            "psnr": float(np.mean([float(g["psnr"][0]) for g in per_batch])),
            "grad_norms": _tolist(mean_norms),
            "relative_grad_norms": _tolist({k: mean_norms[k] / np.maximum(np.asarray(param_norms[k]),
                                                                          1e-30)
                                            for k in mean_norms}),
            "grad_norms_per_batch": [_tolist(n) for n in norms],
            "hypergradients": _tolist(jax.tree.map(lambda *xs: np.mean(xs, axis=0), *hyper)),
        }
        # dJ/dlog v = v dJ/dv: the change of J per e-fold change of v, comparable across scalars.
        results[name]["log_hypergradients"] = {
            obj: {k: (np.asarray(v) * np.asarray(results["scalars"][k])).tolist()
                  for k, v in grads.items()}
            for obj, grads in results[name]["hypergradients"].items()}
    results["timings"]["gradients"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    g, sharp = jnp.asarray(eval_batch["blurred"]), jnp.asarray(eval_batch["sharp"])
    sens = jax.jit(lambda g: stage_sensitivity(graphdef, params, g, config, jax.random.key(seed),
                                               probes, power_iterations))(g)
    results["sensitivity"] = {
        "images": int(g.shape[0]), "image_size": list(g.shape[1:]), "probes": probes,
        "power_iterations": power_iterations,
        "stage_psnr": _tolist(jax.vmap(lambda u: metrics.psnr(u, sharp))(sens["outputs"])),
        "noise_gain": _tolist(sens["noise_gain"]), "lipschitz": _tolist(sens["lipschitz"]),
        "lipschitz_max": _tolist(jnp.max(sens["lipschitz"], axis=1)),
    }
    results["timings"]["sensitivity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results["gst"] = {"errors": [
        dict(gst_gradient_errors(theta, p, gst_iterations, num=gst_samples, seed=seed,
                                 reference_iterations=gst_reference_iterations), source=label)
        for theta, p, label in gst_pairs]}
    if gst_shape is not None:
        results["gst"]["cost"] = {
            str(n): gst_cost(tuple(gst_shape), n, repeats=gst_repeats, seed=seed)
            for n in sorted({3, max(gst_iterations)})}
    results["timings"]["gst"] = time.perf_counter() - t0
    return results


def learned_gst_pairs(graphdef, params) -> list:
    """(theta, p, "stage k scale i") of every GST of the image prox (empty for soft thresholds)."""
    values = scalar_values(graphdef, params)
    if "image_p" not in values:
        return []
    thetas, ps = np.asarray(values["image_theta"]), np.asarray(values["image_p"])
    return [(float(thetas[k, i]), float(ps[k, i]), f"stage {k + 1} scale {i + 1}")
            for k in range(thetas.shape[0]) for i in range(thetas.shape[1])]


def _tolist(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64).tolist(), tree)


def plot_study(results: dict, out_dir) -> list[Path]:
    """grad_norms.png, hypergradients.png, sensitivity.png, gst_gradients.png in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unroll import plots

    out_dir = Path(out_dir)
    written = []

    def save(fig, name):
        fig.tight_layout()
        plots.save_figure(fig, out_dir / name)
        written.append(out_dir / name)

    # 1. Gradient norms per stage and group (absolute and relative to the parameters' norms).
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in ((axes[0], "grad_norms", "||dL/dw|| (train batches)"),
                           (axes[1], "relative_grad_norms", "||dL/dw|| / ||w||")):
        norms = results["train"][key]
        k = len(norms["total"])
        for j, group in enumerate(GROUPS):
            ax.bar(np.arange(k) + (j - 1) * 0.27, np.maximum(norms[group], 1e-12), 0.27, label=group)
        ax.set_yscale("log")
        ax.set_xticks(range(k), [f"stage {i + 1}" for i in range(k)])
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    save(fig, "grad_norms.png")

    # 2. Hypergradients of the final PSNR per scalar and stage.
    hyper = results["eval"]["hypergradients"]["psnr"]
    fig, axes = plt.subplots(1, len(hyper), figsize=(3 * len(hyper), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], hyper.items()):
        values = np.asarray(values, np.float64)
        values = values.reshape(values.shape[0], -1)
        k, scales = values.shape
        for i in range(scales):
            ax.bar(np.arange(k) + (i - (scales - 1) / 2) * 0.8 / scales, values[:, i],
                   0.8 / scales, label=f"scale {i + 1}" if scales > 1 else None)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(range(k), [str(i + 1) for i in range(k)])
        ax.set_title(f"dPSNR/d{name}", fontsize=9)
        ax.set_xlabel("stage", fontsize=8)
        if scales > 1:
            ax.legend(fontsize=7)
    save(fig, "hypergradients.png")

    # 3. Sensitivity per stage.
    sens = results["sensitivity"]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    k = len(sens["lipschitz"])
    lipschitz, gains = np.asarray(sens["lipschitz"]).T, np.asarray(sens["noise_gain"]).T
    for i, (lip, gain) in enumerate(zip(lipschitz, gains)):
        ax.plot(range(1, k + 1), lip, "o-", color=f"C{i % 10}", label=f"image {i + 1}: Lipschitz")
        ax.plot(range(1, k + 1), gain, "s--", color=f"C{i % 10}",
                label=f"image {i + 1}: noise gain")
    ax.set_xticks(range(1, k + 1))
    ax.set_xlabel("stage k")
    ax.set_title("g -> u_k: spectral norm and RMS gain of the Jacobian", fontsize=9)
    ax.legend(fontsize=6)
    save(fig, "sensitivity.png")

    # 4. GST derivative errors against the converged exact prox.
    if results["gst"]["errors"]:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
        for j, entry in enumerate(results["gst"]["errors"]):
            learned = entry["source"].count("stage")
            label = f"p={entry['p']:.2f}" + (f", {learned} learned" if learned else "")
            for method, style in (("unrolled", "o-"), ("implicit", "s--")):
                for ax, name in zip(axes, ("y", "theta", "p")):
                    ax.plot(entry["iterations"], np.maximum(entry[method][name], 1e-17), style,
                            color=f"C{j % 10}", label=label if method == "unrolled" else None)
        for ax, name in zip(axes, ("y", "theta", "p")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("fixed-point iterations")
            ax.set_title(f"rel. error of dGST/d{name} (solid unrolled, dashed implicit)", fontsize=8)
        axes[0].legend(fontsize=6)
        save(fig, "gst_gradients.png")
    return written
