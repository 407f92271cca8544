"""unroll.studies and experiments.grad_study: each study against an independent reference (finite
differences in float64, a dense Jacobian, gradients computed directly), and the CLI end to end."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unroll import kernels, losses, metrics, ops, studies
from unroll.config import Config
from unroll.models import MGSTNet, blocks

ROOT = Path(__file__).resolve().parents[1]
# The smallest MGSTNet with every part: 2 stages, KPM, one GST per stage.
TINY = dict(stages=2, scales=1, kernel_rcabs=0, image_rcabs=0, features=4, kernel_features=2,
            kernel_size=5, channels=1, steps=1)


def _model(dtype=jnp.float64, **overrides):
    config = Config(**TINY)
    model = MGSTNet(**{k: v for k, v in TINY.items() if k != "steps"}, **overrides,
                    rngs=nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model)
    return config, graphdef, jax.tree.map(lambda x: x.astype(dtype), params)


def _batch(n, size, dtype=jnp.float64, seed=0):
    rng = np.random.default_rng(seed)
    sharp = jnp.asarray(rng.random((n, size, size, 1)), dtype)
    h = jnp.asarray(np.stack([kernels.gaussian(5, 1.0 + 0.3 * i) for i in range(n)]), dtype)
    return {"sharp": sharp, "blurred": ops.blur(sharp, h) + 0.01 * jnp.asarray(
        rng.normal(size=sharp.shape), dtype)}


def _names(path):
    names = tuple(getattr(k, "key", getattr(k, "name", None)) for k in path)
    return names[:-1] if names[-1] == "value" else names


# Where each learned scalar lives, and how the network constrains it.
SLOTS = {"mu": ("raw_mu",), "rho": ("raw_rho",),
         "kernel_theta": ("kernel_prox", "threshold", "raw_theta"),
         "image_theta": ("image_prox", "thresholds", 0, "raw_theta"),
         "image_p": ("image_prox", "thresholds", 0, "p0")}


def _raw_value(params, keys, k):
    """Stage k's entry of the raw scalar at `keys` (stage parameters are stacked on axis 0)."""
    (leaf,) = [x for path, x in jax.tree_util.tree_flatten_with_path(params)[0] if _names(path) == keys]
    return float(leaf[k])


def _with_raw(params, keys, k, raw):
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[k].set(raw) if _names(path) == keys else x, params)


def _constrain(name, raw):
    return 1 / (1 + math.exp(-raw)) if name == "image_p" else math.log1p(math.exp(raw))


def _unconstrain(name, v):
    return math.log(v / (1 - v)) if name == "image_p" else math.log(math.expm1(v))


@pytest.fixture(scope="module")
def float64_study():
    """Hypergradients, stage gradient norms, a directly computed gradient and finite differences of
    the loss and the final PSNR, all of the tiny model in float64 (one compilation each)."""
    with jax.enable_x64(True):
        config, graphdef, params = _model()
        batch = _batch(2, 16)

        def direct_loss(params):  # eq. (21), written out here rather than through the studies
            out = nnx.merge(graphdef, params)(batch["blurred"])
            return losses.mgstnet_loss(out, batch["sharp"], batch["blurred"], alpha=config.alpha,
                                       boundary=config.boundary)

        @jax.jit
        def analytic(params):
            return (studies.hypergradients(graphdef, params, batch, config),
                    studies.stage_grad_norms(graphdef, params, batch, config),
                    jax.grad(direct_loss)(params))

        @jax.jit
        def objectives(params):
            out = nnx.merge(graphdef, params)(batch["blurred"])
            return jnp.stack([direct_loss(params),
                              jnp.mean(metrics.psnr(out.images[-1], batch["sharp"]))])

        hyper, norms, grads = jax.tree.map(np.asarray, analytic(params))
        finite = {}
        for name, tail in SLOTS.items():
            for k in range(config.stages):
                keys = ("stages",) + tail
                v = _constrain(name, _raw_value(params, keys, k))
                step = 1e-5 * min(v, 1 - v) if name == "image_p" else 1e-5 * v
                up, down = (objectives(_with_raw(params, keys, k, _unconstrain(name, v + s)))
                            for s in (step, -step))
                finite[(name, k)] = np.asarray((up - down) / (2 * step))
        return {"hyper": hyper, "norms": norms, "grads": grads, "finite": finite,
                "values": jax.tree.map(np.asarray, studies.scalar_values(graphdef, params)),
                "params": jax.tree.map(np.asarray, params)}


def test_hypergradients_match_finite_differences(float64_study):
    hyper, finite = float64_study["hyper"], float64_study["finite"]
    for (name, k), fd in finite.items():
        for j, objective in enumerate(("loss", "psnr")):
            ad = hyper[objective][name][k]
            ad = ad[0] if np.ndim(ad) else ad  # image scalars are [K, scales], one scale here
            scale = max(np.max(np.abs(hyper[objective][n])) for n in hyper[objective])
            np.testing.assert_allclose(ad, fd[j], rtol=1e-4, atol=1e-6 * scale,
                                       err_msg=f"d{objective}/d{name} stage {k + 1}")
    # The values are the constrained ones (positive steps and thresholds, p in (0, 1)).
    values = float64_study["values"]
    assert set(values) == set(SLOTS) and values["image_theta"].shape == (2, 1)
    assert np.all(values["mu"] > 0) and np.all((values["image_p"] > 0) & (values["image_p"] < 1))


def _stage_groups_directly(grads, k):
    """Squared norms of stage k's kernel prox, image prox and scalars from the nested gradient."""
    stage = jax.tree.map(lambda x: x[k], nnx.to_pure_dict(grads["stages"]))  # stacked on axis 0
    scalars = [stage.pop("raw_mu"), stage.pop("raw_rho"), stage["kernel_prox"].pop("threshold"),
               stage["image_prox"].pop("thresholds")]
    sq = lambda tree: sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(tree))  # noqa: E731
    return {"kernel_prox": sq(stage["kernel_prox"]), "image_prox": sq(stage["image_prox"]),
            "scalars": sq(scalars)}


def test_stage_grad_norms_equal_norms_of_the_direct_gradient(float64_study):
    norms, grads = float64_study["norms"], float64_study["grads"]
    for k in range(2):
        direct = _stage_groups_directly(grads, k)
        for group, sq in direct.items():
            np.testing.assert_allclose(norms[group][k], np.sqrt(sq), rtol=1e-10)
            assert sq > 0, (group, k)
        np.testing.assert_allclose(norms["total"][k], np.sqrt(sum(direct.values())), rtol=1e-10)
    # The parameter norms use the same grouping.
    param_norms = studies.stage_group_norms(float64_study["params"])
    direct = _stage_groups_directly(float64_study["params"], 1)
    np.testing.assert_allclose(float(param_norms["image_prox"][1]), np.sqrt(direct["image_prox"]),
                               rtol=1e-6)


def test_scalars_are_read_through_the_stage_properties():
    """scalar_values equals the stacked stage module's named properties, for every model variant."""
    for overrides in ({}, {"kernel_prox": False}, {"threshold": "soft"}):
        config, graphdef, params = _model(jnp.float32, **overrides)
        stages = nnx.merge(graphdef, params).stages
        values = studies.scalar_values(graphdef, params)
        np.testing.assert_array_equal(values["mu"], stages.mu)
        np.testing.assert_array_equal(values["rho"], stages.rho)
        thresholds = list(stages.image_prox.thresholds)
        np.testing.assert_array_equal(values["image_theta"][:, 0], thresholds[0].theta)
        assert ("kernel_theta" in values) == (overrides.get("kernel_prox", True))
        assert ("image_p" in values) == (overrides.get("threshold", "gst") == "gst")
        if "image_p" in values:
            np.testing.assert_array_equal(values["image_p"][:, 0], thresholds[0].p)
        norms = studies.stage_group_norms(params)
        assert set(norms) == {*studies.GROUPS, "total"} and norms["total"].shape == (2,)
        if not overrides.get("kernel_prox", True):
            np.testing.assert_array_equal(norms["kernel_prox"], 0)


def test_studies_refuse_a_baseline():
    from unroll.models import IDC

    graphdef, params = nnx.split(IDC(channels=1, features=2, scales=1, resblocks=0))
    with pytest.raises(ValueError, match="MGSTNet"):
        studies.scalar_values(graphdef, params)


def test_sensitivity_of_an_implicit_gst_model_runs_in_forward_mode():
    """gst_grad="implicit" is reverse mode only: the forward-mode studies differentiate GST
    through its iterations, and its value is the same, so the outputs match the unrolled model's."""
    config, graphdef, params = _model(jnp.float32, gst_grad="implicit")
    _, graphdef_unrolled, _ = _model(jnp.float32)
    g = _batch(1, 8, jnp.float32)["blurred"]
    sens = jax.jit(lambda g: studies.stage_sensitivity(graphdef, params, g, config,
                                                       jax.random.key(0), 2, 3))(g)
    ref = studies.stage_outputs(graphdef_unrolled, params, g)
    np.testing.assert_allclose(sens["outputs"], ref, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(sens["lipschitz"])) and np.all(sens["lipschitz"] > 0)


def test_power_iteration_matches_spectral_norm_of_dense_jacobian():
    with jax.enable_x64(True):
        config, graphdef, params = _model()
        g = _batch(2, 6)["blurred"]
        n = g[0].size

        @jax.jit
        def run(g):
            with blocks.forward_mode_convolutions():  # jacfwd: forward mode
                jacobian = jax.jacfwd(
                    lambda g: studies.stage_outputs(graphdef, params, g, config))(g)
            # Clustered singular values here (1.2514, 1.2499, ...): slow convergence, many steps.
            sens = studies.stage_sensitivity(graphdef, params, g, config, jax.random.key(0),
                                             probes=128, iterations=400)
            return jacobian, sens["lipschitz"], sens["noise_gain"]

        jacobian, lipschitz, gains = (np.asarray(x) for x in run(g))
        assert lipschitz.shape == gains.shape == (2, 2)
        for k in range(2):
            for i in range(2):  # the images are independent: one diagonal block each
                block = jacobian[k, i, ..., i, :, :, :].reshape(n, n)
                sigma = np.linalg.svd(block, compute_uv=False)
                assert lipschitz[k, i] <= sigma[0] * (1 + 1e-9)
                np.testing.assert_allclose(lipschitz[k, i], sigma[0], rtol=1e-3)
                # RMS gain over random directions ~ Frobenius norm / sqrt(n).
                np.testing.assert_allclose(gains[k, i], np.linalg.norm(block) / np.sqrt(n), rtol=0.1)
        off = jacobian[:, 0, ..., 1, :, :, :]
        assert np.max(np.abs(off)) < 1e-12


def _finite_numbers(tree):
    if isinstance(tree, dict):
        return all(_finite_numbers(v) for v in tree.values())
    if isinstance(tree, list):
        return all(_finite_numbers(v) for v in tree)
    return not isinstance(tree, float) or math.isfinite(tree)


CLI = [sys.executable, "-m", "experiments.grad_study",
       f"--flagfile={ROOT / 'experiments' / 'flags' / 'tiny.flags'}"]
# Smaller than tiny.flags (one stage, no RCABs), and small study settings: seconds, not minutes.
SMALL = ["--stages=1", "--kernel_rcabs=0", "--image_rcabs=0", "--features=4", "--kernel_features=2",
         "--batch_size=2", "--num_images=2", "--num_batches=1", "--power_iterations=3", "--probes=1",
         "--gst_shape=2,8,8,4", "--gst_iterations=1,3", "--gst_samples=64", "--gst_p=0.5",
         "--gst_repeats=1", "--gst_reference_iterations=10"]


def test_cli_writes_grad_study_json_and_plots(tmp_path):
    run = subprocess.run(CLI + SMALL + [f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env=os.environ.copy())
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "grad_study.json").read_text())
    for key in ("model", "config", "study", "scalars", "param_norms", "train", "eval", "sensitivity",
                "gst", "timings"):
        assert key in result, key
    assert result["model"]["source"] == "initialisation" and "no latest checkpoint" in result[
        "model"]["reason"]
    stages = result["config"]["stages"]
    for part in ("train", "eval"):
        assert set(result[part]["grad_norms"]) == {"kernel_prox", "image_prox", "scalars", "total"}
        assert len(result[part]["grad_norms"]["total"]) == stages
        assert set(result[part]["hypergradients"]) == {"loss", "psnr"}
        assert set(result[part]["hypergradients"]["psnr"]) == set(SLOTS)
    assert np.asarray(result["sensitivity"]["lipschitz"]).shape == (stages, 2)
    (errors,) = result["gst"]["errors"]  # the grid p = 0.5 and the untrained GSTs coincide
    assert "stage 1 scale 1" in errors["source"] and len(errors["implicit"]["y"]) == 2
    assert set(result["gst"]["cost"]["3"]) >= {"unrolled", "implicit"}
    assert result["gst"]["cost"]["3"]["implicit"]["temp_bytes"] >= 0
    assert _finite_numbers(result)
    for name in ("grad_norms", "hypergradients", "sensitivity", "gst_gradients"):
        assert (tmp_path / "grad_study" / f"{name}.png").stat().st_size > 0


def test_cli_user_error_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run(CLI + ["--crop=6", f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=os.environ.copy())
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: --crop=6") and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "grad_study.json").exists()


def test_cli_studies_a_checkpoint_with_its_own_configuration(tmp_path):
    """A workdir trained one step: --workdir alone (the configuration comes from the checkpoint via
    unroll.load); a flag that would change the network is refused."""
    model = ["--stages=1", "--kernel_rcabs=0", "--image_rcabs=0", "--features=4",
             "--kernel_features=2", "--batch_size=2"]
    train = subprocess.run(
        [sys.executable, "-m", "experiments.mgstnet",
         f"--flagfile={ROOT / 'experiments' / 'flags' / 'tiny.flags'}", *model, "--steps=1",
         "--save_every=1", "--num_samples=0", f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert train.returncode == 0, train.stderr[-3000:]
    study = [sys.executable, "-m", "experiments.grad_study", f"--workdir={tmp_path}",
             "--checkpoint=latest", "--crop=32"] + SMALL[SMALL.index("--batch_size=2"):]
    run = subprocess.run(study, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=os.environ.copy())
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "grad_study.json").read_text())
    assert result["model"]["source"] == "checkpoint" and result["model"]["step"] == 1
    assert result["config"]["features"] == 4 and result["config"]["kernel_size"] == 7
    refused = subprocess.run(study + ["--stages=2"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env=os.environ.copy())
    assert refused.returncode == 2 and "--stages=2 (checkpoint has 1)" in refused.stderr
