"""Shrinkage operators: soft threshold (eq. 13) and the generalized shrinkage threshold GST_p (eqs. 19-20).

GST_p(y, theta) is the proximal map of theta |x|^p (0 < p <= 1) computed as in Zuo et al. 2013:
zero below the threshold tau_p(theta), above it the larger fixed point of S = |y| - theta p S^(p-1).
p = 1 gives the soft threshold, p -> 0 the hard threshold at sqrt(2 theta).

Every power b^e is written as exp(e log b) with b clamped away from zero, so values and gradients stay
finite for y = 0, |y| = tau, theta -> 0 and p anywhere in (0, 1], where plain `x ** (p - 1)` gives
inf * 0 = NaN in the branch that `where` discards (and its gradient still flows through). The
per-element powers are `unroll.fastmath.power`: its short log2 shortens the dependent chain at whose
latency GST's fused loop runs on XLA:CPU, which makes the paper's solver 1.5 times as fast as with
XLA's log, Halley's 1.1 times (`python -m benchmarks.ops` here and at eefabf5).

`gst` is differentiated by unrolling its iterations; `gst_implicit` has the same value and
differentiates the exact prox instead, by the implicit function theorem (eqs. I1-I3 below).

Two solvers find S (`solver=`): the paper's fixed-point iteration of eq. (20) from S_0 = |y| (three
iterations, three powers per element), and Halley's method on the optimality condition (I1) from an
upper bound of the root (eqs. N1-N2 below): one step, one power, is 25 times more accurate than the
paper's three fixed-point steps at worst (7e-4 |y| against 1.7e-2 |y|) and about twice as fast.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from unroll import fastmath

THRESHOLDS = ("gst", "soft")  # the shrinkage operators a prior can use: GST_p or the soft threshold
GST_SOLVERS = ("fixed_point", "halley")  # how S of eq. (19) is found: eq. (20), or Halley on (I1)


# The name scope of GST's operations in compiled HLO (their metadata op_name): benchmarks.profile_step
# finds GST's share of a train step by it.
SCOPE = "gst"


def soft_threshold(y, theta):
    """Soft threshold `sgn(y) max(|y| - theta, 0)` (eq. 13), the prox of theta |x|.

    >>> import jax.numpy as jnp
    >>> soft_threshold(jnp.array([-2.0, 0.5, 1.5]), 1.0).tolist()
    [-1.0, 0.0, 0.5]
    """
    return jnp.sign(y) * jnp.maximum(jnp.abs(y) - theta, 0)


def _safe_log(b):
    return jnp.log(jnp.maximum(b, jnp.finfo(jnp.result_type(b, jnp.float32)).tiny))


def gst_threshold(theta, p):
    """tau_p(theta) = (2 theta (1 - p))^(1 / (2 - p)) + theta p (2 theta (1 - p))^((p - 1) / (2 - p)).

    Equals theta at p = 1 (the limit 0^0 = 1 of the second term) and sqrt(2 theta) at p = 0.

    >>> [round(float(gst_threshold(0.5, p)), 4) for p in (1.0, 0.5, 1e-6)]
    [0.5, 0.9449, 1.0]
    """
    return _threshold_and_root(theta, p)[0]


def _threshold_and_root(theta, p):
    """(tau, S_tau): the threshold and the prox's magnitude there, S_tau = (2 theta (1 - p))^(1/(2-p))."""
    log_b = _safe_log(2 * theta * (1 - p))
    s_tau = jnp.exp(log_b / (2 - p))
    return s_tau + theta * p * jnp.exp(log_b * (p - 1) / (2 - p)), s_tau


def _gst_magnitude(y, theta, p, iterations: int, delta: float, solver: str):
    """(keep, S): the mask |y| > tau_p(theta) (eq. 19) and the solver's S after `iterations` steps,
    valid where keep."""
    if solver not in GST_SOLVERS:
        raise ValueError(f"solver must be one of {GST_SOLVERS}, got {solver!r}")
    tau, s_tau = _threshold_and_root(theta, p)
    keep = jnp.abs(y) > tau
    # Iterate only where the result is used; elsewhere start from tau, where the map is well behaved.
    a = jnp.maximum(jnp.abs(y), tau)

    if solver == "fixed_point":
        def body(_, s):  # eq. (20): S_n = |y| - theta p (S_{n-1} + delta)^(p - 1)
            return a - theta * p * fastmath.power(s + delta, p - 1)

        return keep, lax.fori_loop(0, iterations, body, a, unroll=True)

    # Halley's method on F(S) = S - |y| + theta p (S + delta)^(p-1) = 0 (eq. I1 with eq. 20's delta).
    # F is increasing and convex for S >= S_tau, with F' in [1 - p/2, 1] there (see I2), and
    # F(S_tau) = 0 at |y| = tau. Hence the root lies between S_tau + (|y| - tau) and
    #   S_0 = min(|y|, S_tau + (|y| - tau) / (1 - p/2)),                                     (N1)
    # an upper bound from which each step uses one power and converges cubically:
    #   S <- S - 2 F F' / (2 F'^2 - F F''),  F' = 1 - (1 - p) w / u,  F'' = (2 - p)(1 - p) w / u^2,
    # with u = S + delta and w = theta p u^(p-1). Multiplied through by u^2, with q = u F':
    #   S <- S - 2 F q u / (2 q^2 - (2 - p)(1 - p) w F).                                     (N2)
    # Over theta in [1e-3, 5], p in [1e-3, 0.999], one step is within 7e-4 |y| of the root (eq. 20's
    # three steps: 1.7e-2) and 1.3e-5 |y| on average (6e-4), as tests/test_shrinkage.py measures.
    # The denominator stays >= 1.9 q^2 there; the clamps (q >= (1 - p/2) u, denominator >= q^2) only
    # guard against rounding. One division per step and none per element in S_0: XLA then fuses the
    # operator into one kernel.
    def halley(_, s):
        u = s + delta
        w = theta * p * fastmath.power(u, p - 1)  # u >= delta > 0
        f = s - a + w
        q = jnp.maximum(u - (1 - p) * w, (1 - p / 2) * u)
        return s - 2 * f * q * u / jnp.maximum(2 * q * q - (2 - p) * (1 - p) * w * f, q * q)

    s0 = jnp.minimum(a, s_tau + (a - tau) * (1 / (1 - p / 2)))
    return keep, lax.fori_loop(0, iterations, halley, s0, unroll=True)


def gst(y, theta, p, iterations: int = 3, delta: float = 1e-5, solver: str = "fixed_point"):
    """Generalized shrinkage threshold GST_p(y, theta) of eqs. (19)-(20).

    `theta` and `p` broadcast against `y` (e.g. one value per channel). `iterations` (static) counts
    the solver's steps: the paper's 3 for `solver="fixed_point"` (eq. 20), 1 is enough for
    `solver="halley"` (eq. N2; `delta` must then be > 0, which bounds (S + delta)^(p-3)). The loop
    is unrolled so that XLA fuses the whole operator into one elementwise kernel.

    >>> import jax, jax.numpy as jnp
    >>> y = jnp.array([-2.0, -0.5, 0.0, 0.7, 3.0])
    >>> [round(v, 4) for v in gst(y, 0.5, 0.5).tolist()]
    [-1.8144, 0.0, 0.0, 0.0, 2.852]
    >>> [round(v, 3) for v in gst(y, 0.5, 0.5, iterations=1, solver="halley").tolist()]
    [-1.814, 0.0, 0.0, 0.0, 2.852]
    >>> bool(jnp.allclose(gst(y, 0.5, 1.0), soft_threshold(y, 0.5)))  # p = 1: soft threshold
    True
    >>> round(float(jax.grad(lambda y: gst(y, 0.5, 0.5))(3.0)), 3)
    1.027
    """
    if solver == "halley" and not delta > 0:
        raise ValueError(f"solver='halley' needs delta > 0, got {delta}")
    with jax.named_scope(SCOPE):  # names its operations (and their gradients) in profiles
        keep, s = _gst_magnitude(y, theta, p, iterations, delta, solver)
        return jnp.where(keep, jnp.sign(y) * jnp.maximum(s, 0), 0).astype(y.dtype)


# ----------------------------------------------------------------------------------------------------
# Implicit differentiation of the exact prox.
#
# For a = |y| > tau the prox of theta |x|^p is sgn(y) S, S > 0 the larger root of the optimality
# condition of min_S 1/2 (S - a)^2 + theta S^p (eq. 20 at its fixed point, delta = 0):
#   F(S; a, theta, p) = S - a + theta p S^(p-1) = 0.                                        (I1)
# The implicit function theorem gives dS = -(F_a da + F_theta dtheta + F_p dp) / F_S with
#   F_S = 1 - theta p (1 - p) S^(p-2),  F_a = -1,  F_theta = p S^(p-1),
#   F_p = theta S^(p-1) (1 + p log S).                                                      (I2)
# F_S is the objective's second derivative: it grows with S, and at the smallest kept root
# S_tau = (2 theta (1 - p))^(1/(2-p)) (|y| = tau) equals 1 - p/2, so F_S lies in [1 - p/2, 1] and
# the division is always well conditioned. The fixed-point iterates of eq. (20) decrease towards the
# root from S_0 = a and stay above it, so F_S >= 1 - p/2 at every iterate too (a clamp keeps it
# there against rounding). Below the threshold the prox is 0: zero derivative. Hence, with s = sgn(y),
#   dx/dy = 1 / F_S,  dx/dtheta = -s p S^(p-1) / F_S,
#   dx/dp = -s theta S^(p-1) (1 + p log S) / F_S.                                           (I3)
# The jump at |y| = tau (a Dirac in the derivative in theta and p) is ignored, as `gst` ignores it.


def gst_implicit(y, theta, p, iterations: int = 3, delta: float = 1e-5, solver: str = "fixed_point"):
    """GST_p(y, theta) with the value of `gst(y, theta, p, iterations, delta, solver)` and the derivatives of
    the exact prox at that value (implicit function theorem, eqs. I1-I3), through `jax.custom_vjp`.

    The backward pass costs O(1) per element whatever `iterations`, and stores only the output
    (sgn(y) and S are read back from it; an output of exactly 0 counts as thresholded). Reverse mode
    only (`jax.grad`, `jax.vjp`); `theta` and `p` broadcast against `y` and get summed cotangents.

    >>> import jax, jax.numpy as jnp
    >>> y = jnp.array([-2.0, 0.3, 3.0])
    >>> bool(jnp.array_equal(gst_implicit(y, 0.5, 0.5), gst(y, 0.5, 0.5)))  # same value
    True
    >>> [round(v, 3) for v in jax.grad(lambda y: gst_implicit(y, 0.5, 0.5).sum())(y).tolist()]
    [1.054, 0.0, 1.027]
    """
    dtype = jnp.result_type(y, theta, p, jnp.float32)
    return _gst_ift(y, jnp.asarray(theta, dtype), jnp.asarray(p, dtype), iterations, delta, solver)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _gst_ift(y, theta, p, iterations, delta, solver):
    return gst(y, theta, p, iterations, delta, solver)


def _gst_ift_fwd(y, theta, p, iterations, delta, solver):
    x = gst(y, theta, p, iterations, delta, solver)
    return x, (x, theta, p)


def _gst_ift_bwd(iterations, delta, solver, residuals, ct):
    del iterations, delta, solver  # the backward pass does not depend on how the root was found
    x, theta, p = residuals
    with jax.named_scope(SCOPE):
        d_y, d_theta, d_p = _exact_prox_derivatives(x, theta, p)
        ct = ct.astype(d_y.dtype)
        return ((ct * d_y).astype(x.dtype),
                _sum_to_shape(ct * d_theta, theta.shape).astype(theta.dtype),
                _sum_to_shape(ct * d_p, p.shape).astype(p.dtype))


_gst_ift.defvjp(_gst_ift_fwd, _gst_ift_bwd)


def _exact_prox_derivatives(x, theta, p):
    """dx/dy, dx/dtheta, dx/dp of x = GST_p(y, theta) (eq. I3), elementwise, 0 where x = 0."""
    x = x.astype(jnp.result_type(x, theta, p))
    kept = x != 0
    log_s = _safe_log(jnp.abs(x))
    s_pm1 = jnp.exp((p - 1) * log_s)  # S^(p-1): bounded by S_tau^(p-1) <= tau / (theta p)
    # theta p (1 - p) S^(p-2) in log space: 1 - p may be 0 while S^(p-2) overflows (p -> 1, S -> 0).
    curvature = jnp.exp(_safe_log(theta) + _safe_log(p) + _safe_log(1 - p) + (p - 2) * log_s)
    f_s = jnp.maximum(1 - curvature, 1 - p / 2)  # eq. (I2), in [1 - p/2, 1]
    sign = jnp.sign(x)
    d_y = jnp.where(kept, 1 / f_s, 0)
    d_theta = jnp.where(kept, -sign * p * s_pm1 / f_s, 0)
    d_p = jnp.where(kept, -sign * theta * s_pm1 * (1 + p * log_s) / f_s, 0)
    return d_y, d_theta, d_p


def _sum_to_shape(g, shape):
    """Sum a broadcast cotangent back to the shape of the operand that was broadcast."""
    g = jnp.sum(g, axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return jnp.sum(g, axis=axes, keepdims=True).reshape(shape)
