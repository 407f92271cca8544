"""Shrinkage operators: soft threshold (eq. 13) and the generalized shrinkage threshold GST_p (eqs. 19-20).

GST_p(y, theta) is the proximal map of theta |x|^p (0 < p <= 1) computed as in Zuo et al. 2013:
zero below the threshold tau_p(theta), above it the larger fixed point of S = |y| - theta p S^(p-1).
p = 1 gives the soft threshold, p -> 0 the hard threshold at sqrt(2 theta).

Every power is written exp(e * log(b)) with b clamped away from zero, so values and gradients stay
finite for y = 0, |y| = tau, theta -> 0 and p anywhere in (0, 1], where plain `x ** (p - 1)` gives
inf * 0 = NaN in the branch that `where` discards (and its gradient still flows through).

Speed. Each fixed-point step of eq. (20) needs one power S^(p-1), i.e. a logarithm and an
exponential per element, and these dominate the cost of `gst` (the rest is a few multiply-adds). In
float32 the power is computed by `_pow` below: log2 from the float's exponent bits and a polynomial
of degree 8 in the mantissa, exp2 by the same bits and a degree-6 polynomial, with none of the
special-case handling (negative, zero, infinite, NaN arguments) that XLA's `log` and `exp` carry
and that the clamped base never needs. It is as accurate as `exp(e * log(b))` in float32 (both about
1e-7 relative; `tests/test_shrinkage.py` checks it and `gst` against float64). The polynomials are
evaluated by Estrin's scheme: the three powers in a row make the fused kernel latency bound, so short
dependency chains matter more than instruction counts. Measured on XLA:CPU (AVX-512, 8x128x128x64):
22 instructions per element instead of 35 for the value, 26 instead of 41 for the gradient in y, and
about half the time. Other dtypes (float64, bfloat16 computations) use `jnp.exp` and `jnp.log`.

`gst` is differentiated by unrolling its fixed-point iterations: a `jax.custom_jvp` spells out the
derivative of the unrolled steps (the chain rule through S_1, ..., S_n that autodiff would build,
eq. U1 below), so that the derivative reuses the forward pass's powers and logarithms and costs a
division and a few multiply-adds per step. `gst_implicit` has the same value and differentiates the
exact prox instead, by the implicit function theorem (eqs. I1-I3 below).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

THRESHOLDS = ("gst", "soft")  # the shrinkage operators a prior can use: GST_p or the soft threshold


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

    >>> import jax.numpy as jnp
    >>> [round(float(gst_threshold(0.5, p)), 4) for p in (1.0, 0.5, 1e-6)]
    [0.5, 0.9449, 1.0]
    """
    log_b = _safe_log(2 * theta * (1 - p))
    return jnp.exp(log_b / (2 - p)) + theta * p * jnp.exp(log_b * (p - 1) / (2 - p))


# ----------------------------------------------------------------------------------------------------
# Fast float32 powers b^e for b >= the smallest normal float and e in [-1, 0].
#
# log2(b) = k + log2(m) with b = m 2^k, m in [sqrt(1/2), sqrt(2)): k and m come from the float's bits,
# log2(1 + f) = f P(f) (f = m - 1, P of degree 7, least squares on Chebyshev nodes: relative error
# 1.7e-7). 2^z = 2^n (1 + r Q(r)) with n = round(z), r = z - n in [-1/2, 1/2] (Q of degree 5, fitted
# to the relative error: 2e-9); 2^n is added to the exponent bits. 1 + r Q(r) makes 2^0 = 1 exactly,
# so p = 1 (e = 0) gives b^0 = 1 and GST_1 is exactly the soft threshold.

_LN2 = math.log(2)
_LOG2_P = (1.44269495799557, -0.7213527587652961, 0.48092403857674615, -0.3602419859059245,
           0.28707561117417113, -0.24882180565973894, 0.2342098510665766, -0.14620353400832353)
_EXP2_Q = (0.693147205577101, 0.24022648462281157, 0.055503290351535714, 0.009618373251354787,
           0.0013399848290602961, 0.00015370704817957643)
_ROUND = 12582912.0  # 1.5 * 2^23: z + _ROUND holds round(z) in its low mantissa bits (|z| < 2^22)


def _estrin(coeffs, x):
    """sum_i coeffs[i] x^i by Estrin's scheme: pairs first, then powers x^2, x^4, ... The steps are
    independent of each other, so the dependency chain is log2(len) fused multiply-adds long rather
    than len (Horner); these kernels are latency bound, three powers in a row per element."""
    terms = [coeffs[i] + coeffs[i + 1] * x if i + 1 < len(coeffs) else jnp.full_like(x, coeffs[i])
             for i in range(0, len(coeffs), 2)]
    power = x * x
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] * power if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
        power = power * power
    return terms[0]


def _log2_parts(b):
    """(k, f, f P(f)) with log2(b) = k + f P(f), for float32 b >= tiny (normal, finite or +inf)."""
    bits = lax.bitcast_convert_type(b, jnp.int32)
    k = lax.shift_right_arithmetic(bits - 0x3F3504F3, 23)  # 0x3F3504F3 = sqrt(1/2)
    f = lax.bitcast_convert_type(bits - lax.shift_left(k, 23), jnp.float32) - 1
    return k.astype(jnp.float32), f, _estrin(_LOG2_P, f)


def _log2_bits(b):
    k, f, poly = _log2_parts(b)
    return k + f * poly


def _exp2_bits(z):
    """2^z for float32 z, clipped to [-126, 127] (normal floats: never 0, inf or NaN)."""
    z = jnp.clip(z, -126.0, 127.0)
    r = z - jnp.round(z)
    n = lax.bitcast_convert_type(z + _ROUND, jnp.int32) - 0x4B400000  # round(z) as an integer
    poly = 1 + r * _estrin(_EXP2_Q, r)
    return lax.bitcast_convert_type(
        lax.bitcast_convert_type(poly, jnp.int32) + lax.shift_left(n, 23), jnp.float32)


@jax.custom_jvp
def _log2(b):
    return _log2_bits(b)


@_log2.defjvp
def _log2_jvp(primals, tangents):
    (b,), (db,) = primals, tangents
    return _log2(b), db / (b * _LN2)


@jax.custom_jvp
def _pow(b, e):
    """b^e for float32 b >= tiny and e in [-2, 0] (broadcasting), differentiable to any order."""
    k, f, poly = _log2_parts(b)
    return _exp2_bits((e * f) * poly + e * k)  # e log2(b), with e * f and e * k beside the polynomial


@_pow.defjvp
def _pow_jvp(primals, tangents):
    (b, e), (db, de) = primals, tangents
    q = _pow(b, e)
    return q, q * (e * db / b + _LN2 * _log2(b) * de)


def _power_and_log(b, e):
    """(b^e, log b) for b >= tiny: the fast float32 path, or `jnp.exp` / `jnp.log` for other dtypes."""
    if b.dtype == jnp.float32:
        return _pow(b, e), _LN2 * _log2(b)
    log_b = jnp.log(b)
    return jnp.exp(e * log_b), log_b


# ----------------------------------------------------------------------------------------------------
# GST_p by eq. (20) and its unrolled derivative.
#
# With a = max(|y|, tau), c = theta p, e = p - 1, S_0 = a and, for n = 1..N,
#   b_n = max(S_{n-1} + delta, tiny),  q_n = b_n^e,  S_n = a - c q_n,
# GST_p(y, theta) = sgn(y) max(S_N, 0) where |y| > tau, else 0 (b_n is computed as (a + delta) - c q_{n-1},
# one rounding instead of two: values agree with the textbook order to float32 rounding).
# The chain rule through the steps:
#   dS_n = da - q_n dc - c q_n (e [S_{n-1} + delta > tiny] dS_{n-1} / b_n + log(b_n) de),      (U1)
# da = sgn(y) dy where kept, dc = p dtheta + theta dp, de = dp. Where |y| <= tau the output is the
# constant 0 (a = tau there only keeps the unused iterates finite), so its derivative is 0; the
# derivative of max(S_N, 0) is taken as [S_N > 0].


def _gst_steps(y, theta, p, iterations: int, delta: float):
    """(keep, S_N, steps): the mask |y| > tau_p(theta) (eq. 19), the eq. (20) iterate (valid where
    keep) and each step's (b_n, [S_{n-1} + delta > tiny], q_n, log b_n) for the derivative."""
    a = jnp.abs(y)
    tau = gst_threshold(theta, p)
    keep = a > tau
    # Iterate only where the result is used; elsewhere start from tau, where the map is well behaved.
    a = jnp.where(keep, a, tau)
    dtype = jnp.result_type(a, theta, p)
    a, c, e = a.astype(dtype), jnp.asarray(theta * p, dtype), jnp.asarray(p - 1, dtype)
    tiny = jnp.finfo(dtype).tiny
    a_delta = a + jnp.asarray(delta, dtype)
    b, s, steps = a_delta, a, []
    for _ in range(iterations):  # eq. (20): S_n = |y| - theta p (S_{n-1} + delta)^(p - 1)
        valid = b > tiny
        b = jnp.maximum(b, tiny)
        q, log_b = _power_and_log(b, e)
        steps.append((b, valid, q, log_b))
        b, s = a_delta - c * q, a - c * q  # S_n + delta in one step: it is the next step's base
    return keep, s, steps


def gst(y, theta, p, iterations: int = 3, delta: float = 1e-5):
    """Generalized shrinkage threshold GST_p(y, theta) of eqs. (19)-(20).

    `theta` and `p` broadcast against `y` (e.g. one value per channel). `iterations` is static;
    the loop is unrolled so that XLA fuses the whole operator into one elementwise kernel, and so is
    its derivative (eq. U1: the unrolled iterations' exact chain rule, forward and reverse mode).

    >>> import jax, jax.numpy as jnp
    >>> y = jnp.array([-2.0, -0.5, 0.0, 0.7, 3.0])
    >>> [round(v, 4) for v in gst(y, 0.5, 0.5).tolist()]
    [-1.8144, 0.0, 0.0, 0.0, 2.852]
    >>> bool(jnp.allclose(gst(y, 0.5, 1.0), soft_threshold(y, 0.5)))  # p = 1: soft threshold
    True
    >>> round(float(jax.grad(lambda y: gst(y, 0.5, 0.5))(3.0)), 3)
    1.027
    """
    return _gst(jnp.asarray(y), jnp.asarray(theta), jnp.asarray(p), int(iterations), float(delta))


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _gst(y, theta, p, iterations, delta):
    keep, s, _ = _gst_steps(y, theta, p, iterations, delta)
    return _gst_output(y, keep, s)


def _gst_output(y, keep, s):
    """sgn(y) max(S, 0) where kept, else 0 (copysign: no NaN handling of `sign` needed, y != 0)."""
    return jnp.where(keep & (s > 0), jnp.copysign(s, y.astype(s.dtype)), 0).astype(y.dtype)


def _gst_jvp(iterations, delta, primals, tangents):
    y, theta, p = primals
    dy, dtheta, dp = (None if isinstance(t, SymbolicZero) else t for t in tangents)
    keep, s, steps = _gst_steps(y, theta, p, iterations, delta)
    out = _gst_output(y, keep, s)
    dtype = s.dtype
    theta, p = jnp.asarray(theta, dtype), jnp.asarray(p, dtype)
    c, e = theta * p, p - 1
    # eq. (U1) unrolled, by linearity: dS_N = alpha da + beta dc + gamma de, with per-element
    # alpha, beta, gamma (only those whose tangent is not a symbolic zero). The tangent is then one
    # elementwise product per input, so reverse mode reduces each of d theta, d p once.
    alpha = None if dy is None else 1.0  # dS_0 = da
    beta = None if dtheta is None and dp is None else 0.0
    gamma = None if dp is None else 0.0
    # With theta or p live, reverse mode has three consumers of the steps (d y and two reductions)
    # and XLA:CPU keeps no multi-output fusion: every division would be materialised as its own
    # array. b^(e - 1) by `_pow` instead keeps each consumer one fused kernel.
    fused = beta is not None and dtype == jnp.float32
    for b, valid, q, log_b in steps:
        w = c * q
        ratio = c * _pow(b, e - 1) if fused else w / b  # c q_n / b_n
        g = jnp.where(valid, e * ratio, 0)  # -dS_n / dS_{n-1}
        alpha = None if alpha is None else 1 - g * alpha
        beta = None if beta is None else -q - g * beta
        gamma = None if gamma is None else -w * log_b - g * gamma
    kept = keep & (s > 0)
    sign = jnp.sign(y).astype(dtype)
    d_out = None
    if dy is not None:
        d_out = _add(d_out, jnp.where(kept, alpha, 0) * dy)
    if beta is not None:
        dc = _add(None if dtheta is None else p * dtheta, None if dp is None else theta * dp)
        d_out = _add(d_out, jnp.where(kept, sign * beta, 0) * dc)
    if gamma is not None:
        d_out = _add(d_out, jnp.where(kept, sign * gamma, 0) * dp)
    if d_out is None:
        return out, jnp.zeros_like(out)
    return out, jnp.broadcast_to(d_out, out.shape).astype(out.dtype)


def _add(a, b):
    return b if a is None else a if b is None else a + b


_gst.defjvp(_gst_jvp, symbolic_zeros=True)


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


def gst_implicit(y, theta, p, iterations: int = 3, delta: float = 1e-5):
    """GST_p(y, theta) with the value of `gst(y, theta, p, iterations, delta)` and the derivatives of
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
    return _gst_ift(y, jnp.asarray(theta, dtype), jnp.asarray(p, dtype), iterations, delta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _gst_ift(y, theta, p, iterations, delta):
    return gst(y, theta, p, iterations, delta)


def _gst_ift_fwd(y, theta, p, iterations, delta):
    x = gst(y, theta, p, iterations, delta)
    return x, (x, theta, p)


def _gst_ift_bwd(iterations, delta, residuals, ct):
    del iterations, delta  # the backward pass does not depend on how the root was found
    x, theta, p = residuals
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
