"""Plain NumPy reference of every sampling kernel: slow, obvious, used by tests.

Each function has a twin with the same signature in `cpu.py` (Numba) and `cuda.py`; this
module is the specification of the contract (`sample/backend.py: Kernels`). All backends agree
exactly on integer columns and timestamps: the arithmetic order is written out to match the
compiled kernels operation for operation, and transcendental functions go through libm, as
the compiled code's do (philox.log_np and friends).

Units are (client, window) pairs with a positive target rate, in window-major order
(`model/units.py`); the sampler receives their per-unit arrays.
"""
from __future__ import annotations

import math

import numpy as np

from . import philox as px
from .stream2 import gamma2_np
from .bodies import FIELD_BASE, FIELD_ITEM
from .codes import LAW_GAMMA, LAW_STREAM2, LAW_WEIBULL, MODE_RENEWAL, MODE_SERVEGEN, ROOM_BLOCK


def _split_stream(law):
    """(law without the stream flag, True where arrival stream 2: law + LAW_STREAM2; codes.py)."""
    v2 = law >= LAW_STREAM2
    return np.where(v2, law - LAW_STREAM2, law), v2


def _draw(law, shape, seed, client, window, field, index):
    """Scale-1 draws of each unit's law (vectorised over arrays of equal length)."""
    out = np.empty(len(law))
    law, v2 = _split_stream(law)
    g1, g2 = (law == LAW_GAMMA) & ~v2, (law == LAW_GAMMA) & v2
    w, e = law == LAW_WEIBULL, (law != LAW_GAMMA) & (law != LAW_WEIBULL)
    for g, gamma in ((g1, px.gamma_np), (g2, gamma2_np)):
        if g.any():
            out[g] = gamma(shape[g], seed, client[g], window[g], field, index[g])
    if w.any():
        out[w] = px.weibull_np(shape[w], seed, client[w], window[w], field, index[w])
    if e.any():
        out[e] = px.exponential_np(seed, client[e], window[e], field, index[e])
    return out


def _residual(law, k, scale, seed, client, window):
    """Equilibrium (forward-recurrence) time of a stationary renewal process: U × length-biased interval."""
    u = px.uniform_np(seed, client, window, px.FIELD_RENEWAL_START, 1)
    law, v2 = _split_stream(law)
    g, w = law == LAW_GAMMA, law == LAW_WEIBULL
    with np.errstate(divide="ignore"):
        a = np.where(g, k + 1.0, np.where(w, 1.0 + 1.0 / k, 2.0))
    zero = np.zeros(len(law), dtype=np.uint32)
    biased = np.empty(len(law))
    for sel, gamma in ((~v2, px.gamma_np), (v2, gamma2_np)):
        if sel.any():
            biased[sel] = gamma(a[sel], seed, client[sel], window[sel], px.FIELD_RENEWAL_START, zero[sel])
    if w.any():
        biased[w] = px.pow_np(biased[w], 1.0 / k[w])
    return u * biased * scale


def count_renewal(seed, client, window, length, law, k, scale):
    """Arrivals per unit of a renewal process restarted in equilibrium at the window start."""
    n = len(law)
    counts = np.zeros(n, np.int64)
    t = _residual(law, k, scale, seed, client, window)
    alive = t < length
    idx = np.zeros(n, np.int64)
    while alive.any():
        a = np.flatnonzero(alive)
        counts[a] += 1
        t[a] = t[a] + scale[a] * _draw(law[a], k[a], seed, client[a], window[a], px.FIELD_IAT, idx[a])
        idx[a] += 1
        alive[a] = t[a] < length[a]
    return counts


def renewal_arrivals(seed, client, window, start, length, law, k, scale, room_off):
    """(count_renewal's counts, `first`): block b (ROOM_BLOCK units) keeps, packed in unit order
    at first[room_off[b]:], the arrival times of its units whose times all fit its room
    (the compiled kernels walk each sequence once for both)."""
    counts = count_renewal(seed, client, window, length, law, k, scale)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    t = np.empty(offsets[-1])
    fill_arrivals(MODE_RENEWAL, seed, client, window, start, length, law, k, scale, offsets, t)
    first = np.full(room_off[-1], np.nan)
    for b in range(len(room_off) - 1):
        u0, u1 = b * ROOM_BLOCK, min((b + 1) * ROOM_BLOCK, len(law))
        m = min(offsets[u1] - offsets[u0], room_off[b + 1] - room_off[b])
        first[room_off[b]:room_off[b] + m] = t[offsets[u0]:offsets[u0] + m]
    return counts, first


def fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t, room_off=None,
                  first=None):
    """Arrival times of every unit into out_t[offsets[u]:offsets[u+1]], ascending per unit.

    servegen: n = count + 1 scale-free draws X_i; t_j = start + length * (S_j / S_n).
    renewal/poisson: t_1 = start + residual, t_{j+1} = t_j + scale * X_j.
    With renewal_arrivals' (room_off, first), a unit whose times fit its block's room is copied.
    """
    for u in range(len(law)):
        lo, hi = offsets[u], offsets[u + 1]
        m = hi - lo
        if m == 0:
            continue
        if room_off is not None:
            b, base = u // ROOM_BLOCK, offsets[u // ROOM_BLOCK * ROOM_BLOCK]
            if hi - base <= room_off[b + 1] - room_off[b]:
                out_t[lo:hi] = first[room_off[b] + lo - base:room_off[b] + hi - base]
                continue
        if mode == MODE_SERVEGEN:
            idx = np.arange(m + 1)
            x = _draw(np.full(m + 1, law[u]), np.full(m + 1, k[u]), seed, np.full(m + 1, client[u]),
                      np.full(m + 1, window[u]), px.FIELD_IAT, idx)
            s = np.add.accumulate(x)
            total = s[m]
            t = start[u] + length[u] * (s[:m] / total)
            out_t[lo:hi] = np.minimum(t, np.nextafter(start[u] + length[u], -np.inf))
        else:
            r = _residual(np.full(1, law[u]), np.full(1, k[u]), np.full(1, scale[u]), seed,
                          np.full(1, client[u]), np.full(1, window[u]))[0]
            x = _draw(np.full(m, law[u]), np.full(m, k[u]), seed, np.full(m, client[u]),
                      np.full(m, window[u]), px.FIELD_IAT, np.arange(m))
            t = r
            below = np.nextafter(start[u] + length[u], -np.inf)
            for j in range(m):  # sequential sum, as the compiled kernels do it
                v = start[u] + t
                out_t[lo + j] = v if v < below else below
                t = t + scale[u] * x[j]


def window_order(t, unit_offsets, window_first_unit):
    """Stable argsort of t within each window (windows are disjoint in time, so this is global order)."""
    bounds = unit_offsets[window_first_unit]
    perm = np.empty(len(t), np.int64)
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        perm[lo:hi] = lo + np.argsort(t[lo:hi], kind="stable")
    return perm


def lookup(values, cdf, offsets, dist, u):
    """Inverse CDF: the first support value whose cumulative probability reaches u (vectorised)."""
    lo, hi = offsets[dist], offsets[dist + 1]
    out = np.empty(len(u))
    for i in range(len(u)):
        j = lo[i] + np.searchsorted(cdf[lo[i]:hi[i]], u[i], side="left")
        out[i] = values[min(j, hi[i] - 1)]
    return out


def base_uniforms(corr_mode, rho, seed, client, window, k, n_fields):
    """float64[N, F] uniforms for the base fields of each request.

    corr_mode 0 comonotone (one uniform for all fields), 1 independent, 2 Gaussian copula
    with equicorrelation rho: x_f = sqrt(rho) z_0 + sqrt(1 - rho) z_f, u_f = Phi(x_f).
    """
    n = len(k)
    out = np.empty((n, n_fields))
    if corr_mode == 0:
        u = px.uniform_np(seed, client, window, FIELD_BASE, k)
        out[:] = u[:, None]
    elif corr_mode == 1:
        for f in range(n_fields):
            out[:, f] = px.uniform_np(seed, client, window, FIELD_BASE + f, k)
    else:
        z = _copula_normals(seed, client, window, k, n_fields + 1)
        a, b = math.sqrt(rho), math.sqrt(1.0 - rho)
        for f in range(n_fields):
            x = a * z[:, 0] + b * z[:, f + 1]
            out[:, f] = 0.5 * _erfc(-x * _INV_SQRT2)
    return out


_INV_SQRT2 = 0.7071067811865476


def _erfc(x):
    return np.array([math.erfc(v) for v in x])  # math.erfc: the same libm routine numba calls


def _copula_normals(seed, client, window, k, m):
    """m standard normals per request: pairs (cos, sin) of Box-Muller from attempt slots 0, 1, ..."""
    z = np.empty((len(k), m))
    for j in range((m + 1) // 2):
        u1, u2 = px.uniform2_attempt_np(seed, client, window, px.FIELD_COPULA, k, j)
        r = np.sqrt(-2.0 * px.log_np(u1))  # libm's log/cos/sin, as the kernels (see philox.log_np)
        z[:, 2 * j] = r * px.cos_np(2.0 * math.pi * u2)
        if 2 * j + 1 < m:
            z[:, 2 * j + 1] = r * px.sin_np(2.0 * math.pi * u2)
    return z


def fill_items(seed, client, window, k, counts, dist, item_offsets, field_slot, values, cdf, offsets, guide, goff,
               out):
    """Per-item draws of a list field: item i of request r uses stream FIELD_ITEM + slot, attempt i."""
    for r in range(len(k)):
        lo = item_offsets[r]
        for i in range(int(counts[r])):
            u1, _ = px.uniform2_attempt_np(seed, np.uint32(client[r]), np.uint32(window[r]),
                                           FIELD_ITEM + field_slot, np.uint32(k[r]), i)
            out[lo + i] = lookup(values, cdf, offsets, np.array([dist[r]]), np.atleast_1d(u1))[0]


def fill_base(corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff, out):
    """out[slot, f] = value of base field f for every arrival slot, in unit order."""
    counts = np.diff(offsets)
    unit = np.repeat(np.arange(len(counts)), counts)
    k = (np.arange(len(unit)) - offsets[unit]).astype(np.uint64)
    u = base_uniforms(corr_mode, rho, seed, client[unit], window[unit], k, dist.shape[1])
    for f in range(dist.shape[1]):
        out[:, f] = lookup(values, cdf, doff, dist[unit, f], u[:, f])
    return out


def gather_rows(perm, slot_unit, client, t, vals):
    """Rows in time order: timestamp, client_id and base field values (field-major [F, N])."""
    return t[perm], client[slot_unit[perm]], np.ascontiguousarray(vals[perm].T)


def fill_rows(corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff, perm, t):
    """gather_rows of fill_base's values: (timestamp, client_id, base values [F, N]) in the order `perm`."""
    return fill_rows_by(fill_base, gather_rows, corr_mode, rho, seed, offsets, client, window, dist, values, cdf,
                        doff, guide, goff, perm, t)


def fill_rows_by(fill_base, gather_rows, corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff,
                 guide, goff, perm, t):
    """fill_rows as a backend's own two kernels (this module's and the CUDA one's)."""
    vals = fill_base(corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff,
                     np.empty((len(t), dist.shape[1]), np.float64))
    slot_unit = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    return gather_rows(perm, slot_unit, client, t, vals)


from .reference_sessions import expand_turns, fill_block_ids, session_roles  # noqa: E402,F401 (the contract)
from .modulation import warp_arrivals_np as warp_arrivals  # noqa: E402,F401 (the contract)
