"""Special functions in plain NumPy, vectorised (scipy is not a core dependency).

Accuracy is far beyond what fitting inter-arrival laws needs: lgamma ~1e-14 relative
(Lanczos), digamma / trigamma ~1e-12 (recurrence up to x >= 8, then the asymptotic series),
the regularised lower incomplete gamma ~1e-10 absolute (series below a + 1, Lentz's
continued fraction above; Numerical Recipes' split). tests/test_special.py checks all four
against scipy.special.
"""
from __future__ import annotations

import numpy as np

# Lanczos approximation, g = 7, n = 9 (the coefficients of Numerical Recipes / Boost).
_LANCZOS_G = 7.0
_LANCZOS = np.array([0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
                     -176.61502916214059, 12.507343278686905, -0.13857109526572012,
                     9.9843695780195716e-6, 1.5056327351493116e-7])
_HALF_LOG_2PI = 0.5 * np.log(2 * np.pi)
_SHIFT = 8.0  # digamma / trigamma: recur until x >= 8, where the asymptotic series is exact to ~1e-13


def gammaln(x) -> np.ndarray:
    """log Γ(x) for x > 0."""
    x = np.asarray(x, dtype=np.float64)
    z = x - 1.0
    s = np.full_like(z, _LANCZOS[0])
    for i in range(1, len(_LANCZOS)):
        s = s + _LANCZOS[i] / (z + i)
    t = z + _LANCZOS_G + 0.5
    return _HALF_LOG_2PI + (z + 0.5) * np.log(t) - t + np.log(s)


def _shift_up(x: np.ndarray, power: int) -> tuple[np.ndarray, np.ndarray]:
    """(x + n, sum_{i<n} 1/(x+i)^power) with n the smallest count making x + n >= 8."""
    x = np.array(x, dtype=np.float64, copy=True)
    acc = np.zeros_like(x)
    for _ in range(int(_SHIFT)):
        low = x < _SHIFT
        if not low.any():
            break
        acc[low] += x[low] ** -power
        x[low] += 1.0
    return x, acc


def digamma(x) -> np.ndarray:
    """ψ(x) = d/dx log Γ(x) for x > 0."""
    y, acc = _shift_up(np.asarray(x), 1)
    r = 1.0 / (y * y)
    series = r * (1 / 12 - r * (1 / 120 - r * (1 / 252 - r * (1 / 240 - r * (1 / 132)))))
    return np.log(y) - 0.5 / y - series - acc


def trigamma(x) -> np.ndarray:
    """ψ'(x) for x > 0."""
    y, acc = _shift_up(np.asarray(x), 2)
    r = 1.0 / (y * y)
    series = 1 / y + r / 2 + r / y * (1 / 6 - r * (1 / 30 - r * (1 / 42 - r * (1 / 30))))
    return series + acc


def gammainc(a, x, max_iter: int = 1000) -> np.ndarray:
    """Regularised lower incomplete gamma P(a, x) for a > 0, x >= 0 (broadcast)."""
    a, x = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(x, dtype=np.float64))
    out = np.zeros(a.shape)
    pos = x > 0
    ser = pos & (x < a + 1.0)
    cf = pos & ~ser
    if ser.any():
        out[ser] = _gamma_series(a[ser], x[ser], max_iter)
    if cf.any():
        out[cf] = 1.0 - _gamma_cf(a[cf], x[cf], max_iter)
    return np.clip(out, 0.0, 1.0)


def _log_prefactor(a, x):
    return a * np.log(x) - x - gammaln(a)


def _gamma_series(a, x, max_iter):
    # P = x^a e^-x / Γ(a+1) · Σ_n x^n / ((a+1)...(a+n)); terms shrink once a + n > x
    term = 1.0 / a
    total = term.copy()
    ap = a.copy()
    for _ in range(max_iter):
        ap = ap + 1.0
        term = term * x / ap
        total = total + term
        if np.all(np.abs(term) < np.abs(total) * 1e-15):
            break
    return total * np.exp(_log_prefactor(a, x))


def _gamma_cf(a, x, max_iter):
    # Q = x^a e^-x / Γ(a) · continued fraction, evaluated by the modified Lentz method
    tiny = 1e-300
    b = x + 1.0 - a
    c = np.full_like(x, 1.0 / tiny)
    d = 1.0 / b
    h = d.copy()
    for i in range(1, max_iter):
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        delta = d * c
        h = h * delta
        if np.all(np.abs(delta - 1.0) < 1e-15):
            break
    return np.exp(_log_prefactor(a, x)) * h
