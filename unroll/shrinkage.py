"""Shrinkage operators: soft threshold (eq. 13) and the generalized shrinkage threshold GST_p (eqs. 19-20).

GST_p(y, theta) is the proximal map of theta |x|^p (0 < p <= 1) computed as in Zuo et al. 2013:
zero below the threshold tau_p(theta), above it the larger fixed point of S = |y| - theta p S^(p-1).
p = 1 gives the soft threshold, p -> 0 the hard threshold at sqrt(2 theta).

Every power is written exp(e * log(b)) with b clamped away from zero, so values and gradients stay
finite for y = 0, |y| = tau, theta -> 0 and p anywhere in (0, 1], where plain `x ** (p - 1)` gives
inf * 0 = NaN in the branch that `where` discards (and its gradient still flows through).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def soft_threshold(y, theta):
    """Soft threshold `sgn(y) max(|y| - theta, 0)` (eq. 13), the prox of theta |x|."""
    return jnp.sign(y) * jnp.maximum(jnp.abs(y) - theta, 0)


def _safe_log(b):
    return jnp.log(jnp.maximum(b, jnp.finfo(jnp.result_type(b, jnp.float32)).tiny))


def gst_threshold(theta, p):
    """tau_p(theta) = (2 theta (1 - p))^(1 / (2 - p)) + theta p (2 theta (1 - p))^((p - 1) / (2 - p)).

    Equals theta at p = 1 (the limit 0^0 = 1 of the second term) and sqrt(2 theta) at p = 0.
    """
    log_b = _safe_log(2 * theta * (1 - p))
    return jnp.exp(log_b / (2 - p)) + theta * p * jnp.exp(log_b * (p - 1) / (2 - p))


def gst(y, theta, p, iterations: int = 3, delta: float = 1e-5):
    """Generalized shrinkage threshold GST_p(y, theta) of eqs. (19)-(20).

    `theta` and `p` broadcast against `y` (e.g. one value per channel). `iterations` is static;
    the loop is unrolled so that XLA fuses the whole operator into one elementwise kernel.
    """
    a = jnp.abs(y)
    tau = gst_threshold(theta, p)
    keep = a > tau
    # Iterate only where the result is used; elsewhere start from tau, where the map is well behaved.
    a = jnp.where(keep, a, tau)

    def body(_, s):  # eq. (20): S_n = |y| - theta p (S_{n-1} + delta)^(p - 1)
        return a - theta * p * jnp.exp((p - 1) * _safe_log(s + delta))

    s = lax.fori_loop(0, iterations, body, a, unroll=True)
    return jnp.where(keep, jnp.sign(y) * jnp.maximum(s, 0), 0).astype(y.dtype)
