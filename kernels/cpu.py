"""Numba CPU kernels: the same contract as `reference.py`, parallel over units and windows.

Every loop iteration owns its output slice and draws only keyed randomness, so the result
does not depend on the number of threads or the chunk a unit falls in.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from . import philox as px
from .reference import FIELD_BASE, FIELD_ITEM, LAW_EXPONENTIAL, LAW_GAMMA, LAW_WEIBULL, MODE_SERVEGEN

_pjit = numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

_gamma = px.gamma
_weibull = px.weibull
_exponential = px.exponential
_uniform = px.uniform
_uniform2_attempt = px.uniform2_attempt
_FIELD_IAT = px.FIELD_IAT
_FIELD_START = px.FIELD_RENEWAL_START
_FIELD_COPULA = px.FIELD_COPULA
_TWO_PI = 2.0 * math.pi
_INV_SQRT2 = 0.7071067811865476


@_jit
def _draw(law, k, seed, client, window, field, index):
    if law == LAW_GAMMA:
        return _gamma(k, seed, client, window, field, index)
    if law == LAW_WEIBULL:
        return _weibull(k, seed, client, window, field, index)
    return _exponential(seed, client, window, field, index)


@_jit
def _residual(law, k, scale, seed, client, window):
    u = _uniform(seed, client, window, _FIELD_START, 1)
    if law == LAW_GAMMA:
        b = _gamma(k + 1.0, seed, client, window, _FIELD_START, 0)
    elif law == LAW_WEIBULL:
        b = _gamma(1.0 + 1.0 / k, seed, client, window, _FIELD_START, 0) ** (1.0 / k)
    else:
        b = _gamma(2.0, seed, client, window, _FIELD_START, 0)
    return u * b * scale


@_pjit
def count_renewal(seed, client, window, length, law, k, scale):
    n = len(law)
    counts = np.zeros(n, np.int64)
    for u in prange(n):
        t = _residual(law[u], k[u], scale[u], seed, client[u], window[u])
        c = 0
        while t < length[u]:
            t = t + scale[u] * _draw(law[u], k[u], seed, client[u], window[u], _FIELD_IAT, c)
            c += 1
        counts[u] = c
    return counts


@_pjit
def fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t):
    for u in prange(len(law)):
        lo = offsets[u]
        m = offsets[u + 1] - lo
        if m == 0:
            continue
        if mode == MODE_SERVEGEN:
            s = 0.0
            for j in range(m):
                s = s + _draw(law[u], k[u], seed, client[u], window[u], _FIELD_IAT, j)
                out_t[lo + j] = s
            total = s + _draw(law[u], k[u], seed, client[u], window[u], _FIELD_IAT, m)
            end = start[u] + length[u]
            below = np.nextafter(end, -np.inf)
            for j in range(m):
                t = start[u] + length[u] * (out_t[lo + j] / total)
                out_t[lo + j] = t if t < below else below
        else:
            below = np.nextafter(start[u] + length[u], -np.inf)
            t = _residual(law[u], k[u], scale[u], seed, client[u], window[u])
            for j in range(m):
                v = start[u] + t  # t < length, but the sum may round up onto the window end
                out_t[lo + j] = v if v < below else below
                t = t + scale[u] * _draw(law[u], k[u], seed, client[u], window[u], _FIELD_IAT, j)


@_pjit
def window_order(t, unit_offsets, window_first_unit):
    """Permutation putting each window's arrivals in time order (stable: equal times keep unit order)."""
    perm = np.empty(len(t), np.int64)
    for i in prange(len(window_first_unit) - 1):
        lo = unit_offsets[window_first_unit[i]]
        hi = unit_offsets[window_first_unit[i + 1]]
        if hi > lo:
            perm[lo:hi] = lo + np.argsort(t[lo:hi], kind="mergesort")
    return perm


@_jit
def _lookup(values, cdf, guide, lo, hi, goff, u):
    """First support value whose cdf reaches u (u in (0, 1]); the guide table narrows the
    search to the points whose cdf lies in [g/n, (g+1)/n), the fix-ups make it exact."""
    n = hi - lo
    g = int(u * n)
    if g >= n:
        g = n - 1
    a = lo + guide[goff + g]
    b = lo + guide[goff + g + 1]
    while a < b:
        mid = (a + b) >> 1
        if cdf[mid] < u:
            a = mid + 1
        else:
            b = mid
    while a > lo and cdf[a - 1] >= u:
        a -= 1
    while cdf[a] < u:
        a += 1
    return values[a]


@_jit
def _phi(x):
    return 0.5 * math.erfc(-x * _INV_SQRT2)


@_pjit
def fill_base(corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff, out):
    """out[slot, f] = value of base field f for every arrival slot, in unit order.

    Unit order keeps one client's distributions hot in cache; callers gather by the time
    order afterwards.
    """
    n_fields = dist.shape[1]
    sa = math.sqrt(rho)
    sb = math.sqrt(1.0 - rho)
    for u in prange(len(client)):
        lo = offsets[u]
        cu = client[u]
        wu = window[u]
        for k in range(offsets[u + 1] - lo):
            row = lo + k
            if corr_mode == 0:
                v = _uniform(seed, cu, wu, FIELD_BASE, k)
                for f in range(n_fields):
                    d = dist[u, f]
                    out[row, f] = _lookup(values, cdf, guide, doff[d], doff[d + 1], goff[d], v)
            elif corr_mode == 1:
                for f in range(n_fields):
                    d = dist[u, f]
                    v = _uniform(seed, cu, wu, FIELD_BASE + f, k)
                    out[row, f] = _lookup(values, cdf, guide, doff[d], doff[d + 1], goff[d], v)
            else:
                u1, u2 = _uniform2_attempt(seed, cu, wu, _FIELD_COPULA, k, 0)
                z0 = math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)
                for f in range(n_fields):
                    m = f + 1  # normal number m: Box-Muller pair m // 2, cos for even m, sin for odd m
                    u1, u2 = _uniform2_attempt(seed, cu, wu, _FIELD_COPULA, k, m >> 1)
                    r = math.sqrt(-2.0 * math.log(u1))
                    z = r * math.cos(_TWO_PI * u2) if (m & 1) == 0 else r * math.sin(_TWO_PI * u2)
                    d = dist[u, f]
                    out[row, f] = _lookup(values, cdf, guide, doff[d], doff[d + 1], goff[d], _phi(sa * z0 + sb * z))
    return out


@_pjit
def fill_items(seed, client, window, k, counts, dist, item_offsets, field_slot, values, cdf, doff, guide, goff,
               out):
    for r in prange(len(k)):
        lo = item_offsets[r]
        d = dist[r]
        for i in range(counts[r]):
            u1, u2 = _uniform2_attempt(seed, client[r], window[r], FIELD_ITEM + field_slot, k[r], i)
            out[lo + i] = _lookup(values, cdf, guide, doff[d], doff[d + 1], goff[d], u1)


@_pjit
def gather_rows(perm, slot_unit, client, t, vals):
    """Rows in time order: timestamp, client_id and base field values (field-major [F, N])."""
    n = len(perm)
    ts = np.empty(n, np.float64)
    cid = np.empty(n, np.uint32)
    out = np.empty((vals.shape[1], n), np.float64)
    for j in prange(n):
        src = perm[j]
        ts[j] = t[src]
        cid[j] = client[slot_unit[src]]
        for f in range(vals.shape[1]):
            out[f, j] = vals[src, f]
    return ts, cid, out
