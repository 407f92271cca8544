"""A short-latency float32 log2, and the powers x^e = exp(e ln(2) log2 x) built on it.

GST_p needs S^(p-1) for every element (eq. 20). XLA:CPU compiles `exp((p-1) log S)` into a long
dependent chain (its log handles NaN, inf, zero and denormals around a long polynomial), and a fused
elementwise loop whose body is such a chain runs at the chain's latency, not at the core's
throughput: `python -m benchmarks.ops` times three chained powers (`power_chain3_ms`) against three
independent ones (`power_indep3_ms`). GST's arguments are finite, positive and normal, so log2 here
is the float's exponent bits plus one short polynomial, evaluated by Estrin's scheme:

    log2(x) = k + r P(r),    x = 2^k m,  r = m - 1,  m in [sqrt(1/2), sqrt(2))    (P: degree 7)

P is a Chebyshev fit computed below with numpy: r P(r) is within 1.8e-7 of log2(1 + r) relative,
and exact at r = 0 (log2(1) = 0). In float32, log2 is within 3e-7 (1 + |log2 x|) of the exact value
(tests/test_fastmath.py). It has its exact derivative (`jax.custom_jvp`), to every order.

`power` keeps XLA's exp: a fast exp2 built the same way made GST faster still, but XLA's fusion
then copies the whole, now cheap-looking, chain into every consumer of GST's output (each backward
fusion recomputed it), while an exp is an expensive instruction that XLA computes once.
float64 inputs go to `jnp.log2`; bfloat16 and float16 are computed in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_LN2 = math.log(2.0)
_SQRT_HALF_BITS = 0x3F3504F3  # float32 bits of sqrt(1/2): log2's mantissa is centred on 1
_MANTISSA = 0x7FFFFF


def _chebyshev_fit(f, lo: float, hi: float, degree: int) -> tuple[float, ...]:
    """Monomial coefficients (lowest first) of f's Chebyshev interpolant on [lo, hi]."""
    n = 64 * degree
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    fit = np.polynomial.Chebyshev.fit(x, f(x), degree, domain=[lo, hi])
    return tuple(float(c) for c in fit.convert(kind=np.polynomial.Polynomial).coef)


_LOG2_COEFFS = _chebyshev_fit(  # log2(1 + r) / r, whose value at r = 0 is 1 / ln 2
    lambda r: np.log2(1 + r) / np.where(r == 0, 1, r) + (r == 0) / _LN2, math.sqrt(0.5) - 1, math.sqrt(2) - 1, 7)


def _estrin(coeffs, x):
    """sum_i coeffs[i] x^i by Estrin's scheme: log2(degree) levels deep instead of Horner's degree."""
    terms = [jnp.asarray(c, x.dtype) for c in coeffs]
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] * x if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
        x = x * x
    return terms[0]


def _floating(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _tiny(x):
    """The smallest normal number of x's dtype: log2 clamps its argument there."""
    return jnp.finfo(x.dtype).tiny


def _log2_f32(x):
    # x = 2^k m with m in [sqrt(1/2), sqrt(2)): subtracting sqrt(1/2)'s bits makes the exponent
    # field k and leaves m's mantissa bits, to which sqrt(1/2)'s are added back.
    bits = lax.bitcast_convert_type(x, jnp.int32) - _SQRT_HALF_BITS
    k = lax.shift_right_arithmetic(bits, jnp.int32(23))
    m = lax.bitcast_convert_type((bits & _MANTISSA) + _SQRT_HALF_BITS, jnp.float32)
    r = m - 1
    return k.astype(jnp.float32) + r * _estrin(_LOG2_COEFFS, r)


@jax.custom_jvp
def log2(x):
    """Base-2 logarithm of x > 0; arguments below the smallest normal number count as it, inf and
    NaN give themselves.

    >>> round(float(log2(8.0)), 6), round(float(log2(0.1)), 6), float(log2(0.0)), float(log2(jnp.inf))
    (3.0, -3.321928, -126.0, inf)
    """
    x = _floating(x)
    x = jnp.maximum(x, _tiny(x))
    if x.dtype == jnp.float64:
        return jnp.log2(x)
    out = _log2_f32(x.astype(jnp.float32)).astype(x.dtype)
    return jnp.where(x < jnp.inf, out, x)  # the bit arithmetic would give finite values for inf, NaN


@log2.defjvp
def _log2_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    x = _floating(x)
    tiny = _tiny(x)
    # Zero below the clamp, as for log2(max(x, tiny)); 1/x before 1/ln 2 keeps 1/tiny normal.
    return log2(x), jnp.where(x >= tiny, dx, 0) / jnp.maximum(x, tiny) / _LN2


def power(x, e):
    """x^e = exp(e ln(2) log2 x) for x > 0 (smaller x count as the smallest normal number).

    >>> round(float(power(2.0, -0.5)), 6), round(float(power(1e-5, -0.4)), 3)
    (0.707107, 100.0)
    >>> round(float(jax.grad(power)(2.0, -0.5)), 6)  # -0.5 * 2^-1.5
    -0.176777
    """
    return jnp.exp(e * _LN2 * log2(x))
