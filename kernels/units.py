"""A population chunk's units, compiled: the active (client, window) pairs and their parameters.

The host side of every backend: `model/population.py` calls it for any backend, so cpu, cuda and
numpy generate from the same units. The NumPy twin is `model.population._units_numpy` (the
tests' oracle); the arithmetic is the same operations in the same order, so the values are
identical. Work is split into blocks of clients per window, counted in parallel, scanned, then
filled in parallel: window-major, clients ascending within a window (np.nonzero's order).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from . import config
from .codes import LAW_GAMMA, LAW_WEIBULL

_BLOCK = 8192  # clients per task


@config.njit_inline
def _wrap(x, period):
    """x mod period (non-negative), without a division when x is within one period of [0, period)."""
    if x < 0:
        x += period
    elif x >= period:
        x -= period
    if x < 0 or x >= period:
        x = x % period
    return x


@config.njit_parallel
def _count(src, shift, w, day, period, active):
    n = len(src)
    nb = (n + _BLOCK - 1) // _BLOCK
    counts = np.zeros(len(w) * nb, np.int64)
    for task in prange(len(w) * nb):
        wi = task // nb
        if not day[wi] > 0:
            continue
        lo = (task % nb) * _BLOCK
        base = w[wi] % period
        c = 0
        for i in range(lo, min(lo + _BLOCK, n)):
            if active[_wrap(base + shift[i], period), src[i]]:
                c += 1
        counts[task] = c
    return counts


@config.njit_parallel
def population_units(src, shift, mult, cv_factor, client_ids, w, start, length, day, period, active, law, shape,
                     cv, rate, length_index, dist_id, want_source):
    """(wi, client, window, start, length, rate, law, shape, cv, dist, source client, source
    window) of the active pairs of windows `w` (horizon indices; `day` is each one's rate
    factor, > 0 for an active window); the last two (for gathering a modulated source's
    [C, W] arrays) are empty unless `want_source`.
    The source's [window, client] arrays (`active`, `law`, `shape`, `cv`, `rate`: transposed,
    so the clients of the few source windows a chunk reads stay in cache)."""
    n = len(src)
    nb = (n + _BLOCK - 1) // _BLOCK
    counts = _count(src, shift, w, day, period, active)
    off = np.zeros(len(counts) + 1, np.int64)
    for t in range(len(counts)):
        off[t + 1] = off[t] + counts[t]
    m = off[len(counts)]
    f = dist_id.shape[2]
    o_wi = np.empty(m, np.int64)
    o_client = np.empty(m, np.uint32)
    o_window = np.empty(m, np.uint32)
    o_start = np.empty(m, np.float64)
    o_length = np.empty(m, np.float64)
    o_rate = np.empty(m, np.float64)
    o_law = np.empty(m, np.int64)
    o_shape = np.empty(m, np.float64)
    o_cv = np.empty(m, np.float64)
    o_dist = np.empty((m, f), np.int64)
    o_src = np.empty(m if want_source else 0, np.int64)
    o_sw = np.empty(m if want_source else 0, np.int64)
    for task in prange(len(w) * nb):
        if counts[task] == 0:
            continue
        wi = task // nb
        lo = (task % nb) * _BLOCK
        base = w[wi] % period
        j = off[task]
        for i in range(lo, min(lo + _BLOCK, n)):
            s = src[i]
            sw = _wrap(base + shift[i], period)
            if not active[sw, s]:
                continue
            g = law[sw, s]
            x = cv_factor[i]
            k = shape[sw, s]
            if g == LAW_GAMMA:
                k = k / (x * x)
            elif g == LAW_WEIBULL:
                k = k / x
            o_wi[j] = wi
            o_client[j] = np.uint32(client_ids[i])
            o_window[j] = np.uint32(w[wi])
            o_start[j] = start[wi]
            o_length[j] = length[wi]
            o_rate[j] = rate[sw, s] * mult[i] * day[wi]
            o_law[j] = g
            o_shape[j] = k
            o_cv[j] = cv[sw, s] * x
            li = length_index[sw]
            for q in range(f):
                o_dist[j, q] = dist_id[s, li, q]
            if want_source:
                o_src[j] = s
                o_sw[j] = sw
            j += 1
    return o_wi, o_client, o_window, o_start, o_length, o_rate, o_law, o_shape, o_cv, o_dist, o_src, o_sw


@config.njit_parallel
def renewal_params(law, shape, cv, rate):
    """(shape, scale) of each unit's renewal law, as sample.plan.renewal_params_numpy computes
    them, for every law but Weibull, whose scale needs log Γ (left to the caller: NumPy's
    vectorised log and exp round differently from libm's)."""
    n = len(law)
    k = np.empty(n, np.float64)
    scale = np.empty(n, np.float64)
    for i in prange(n):
        if law[i] == LAW_GAMMA:
            c = cv[i] if not cv[i] < 1e-3 else 1e-3  # np.maximum: NaN stays NaN
            k[i] = 1.0 / (c * c)                      # NumPy's x ** 2 is x * x
        elif law[i] == LAW_WEIBULL:
            k[i] = shape[i]
        else:
            k[i] = 1.0
        scale[i] = 1.0 / (rate[i] * k[i]) if law[i] == LAW_GAMMA else 1.0 / rate[i]
    return k, scale
