"""Numba CPU kernels: the same contract as `reference.py`, parallel over units, windows and rows.

The per-unit and per-row logic lives in `bodies.py` (shared with cuda.py); here are only
the parallel loops. Every iteration owns its output slice and draws only keyed
randomness, so the result does not depend on the number of threads or on chunking.
"""
from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, prange

from . import config
from . import philox as px
from .bodies import FIELD_ITEM, make_bodies
from .codes import ROOM_BLOCK
from .session_bodies import make_session_bodies
from .modulation import warp_arrivals  # noqa: F401 (the contract: intra-window modulation)

_pjit = config.njit_parallel
_nbjit = config.njit
_B = make_bodies(config.njit_inline, px._CPU)
_count_unit = _B.count_unit
_fill_unit = _B.fill_unit
_count_fill_unit = _B.count_fill_unit
_base_row = _B.base_row
_item_values = _B.item_values


@_pjit
def count_renewal(seed, client, window, length, law, k, scale):
    counts = np.zeros(len(law), np.int64)
    for u in prange(len(law)):
        counts[u] = _count_unit(seed, client[u], window[u], length[u], law[u], k[u], scale[u])
    return counts


@_pjit
def renewal_arrivals(seed, client, window, start, length, law, k, scale, room_off):
    """count_renewal's counts, and the arrival times of the units that fit their block's room
    (codes.ROOM_BLOCK units a block, packed in unit order at first[room_off[b]:room_off[b+1]]):
    the count and the fill in one walk (fill_arrivals copies them)."""
    n = len(law)
    counts = np.zeros(n, np.int64)
    first = np.empty(room_off[len(room_off) - 1], np.float64)
    for b in prange(len(room_off) - 1):
        lo = room_off[b]
        room = room_off[b + 1] - lo
        used = 0
        for u in range(b * ROOM_BLOCK, min(b * ROOM_BLOCK + ROOM_BLOCK, n)):
            below = np.nextafter(start[u] + length[u], -np.inf)
            c = _count_fill_unit(seed, client[u], window[u], start[u], length[u], below, law[u], k[u], scale[u],
                                 first, lo + used, max(room - used, 0))
            counts[u] = c
            used += c
    return counts, first


@_pjit
def _fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t):
    for u in prange(len(law)):
        lo = offsets[u]
        m = offsets[u + 1] - lo
        if m > 0:
            below = np.nextafter(start[u] + length[u], -np.inf)
            _fill_unit(mode, seed, client[u], window[u], start[u], length[u], below, law[u], k[u], scale[u], lo, m,
                       out_t)


@_pjit
def _place_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t, room_off, first):
    """Each block's kept times copied in one run where all of them fit its room; in a block
    that overflowed, the units that fit are copied and the rest drawn again."""
    n = len(law)
    for b in prange(len(room_off) - 1):
        u0 = b * ROOM_BLOCK
        u1 = min(u0 + ROOM_BLOCK, n)
        base = offsets[u0]
        lo = room_off[b]
        room = room_off[b + 1] - lo
        for u in range(u0, u1):
            m = offsets[u + 1] - offsets[u]
            if m == 0:
                continue
            if offsets[u + 1] - base <= room:
                src = lo + offsets[u] - base
                for j in range(m):
                    out_t[offsets[u] + j] = first[src + j]
            else:
                below = np.nextafter(start[u] + length[u], -np.inf)
                _fill_unit(mode, seed, client[u], window[u], start[u], length[u], below, law[u], k[u], scale[u],
                           offsets[u], m, out_t)


def fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t, room_off=None,
                  first=None):
    """Arrival times of every unit into out_t[offsets[u]:offsets[u+1]]; with renewal_arrivals'
    (room_off, first), the units it kept are copied and only the others drawn."""
    if room_off is None:
        _fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t)
    else:
        _place_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t, room_off, first)


@_nbjit
def _sort_window(t, lo, hi, perm):
    """perm[lo:hi] = lo + the stable argsort of t[lo:hi].

    Arrival times fill their window nearly uniformly, so a counting pass over about one
    bucket per arrival plus insertion sort inside each bucket is linear in practice, several
    times faster than a comparison sort. Stability makes the result the unique permutation
    that orders (t, slot), the same as any stable sort's.
    """
    n = hi - lo
    tmin = t[lo]
    tmax = t[lo]
    for i in range(lo, hi):
        x = t[i]
        if x < tmin:
            tmin = x
        if x > tmax:
            tmax = x
    if not tmax > tmin:  # one arrival, or all tied
        for i in range(n):
            perm[lo + i] = lo + i
        return
    f = n / (tmax - tmin)
    key = np.empty(n, np.int64)
    start = np.zeros(n + 1, np.int64)
    for i in range(n):
        b = int((t[lo + i] - tmin) * f)
        b = min(b, n - 1)
        key[i] = b
        start[b + 1] += 1
    for b in range(n):
        start[b + 1] += start[b]
    fill = start[:n].copy()
    for i in range(n):
        b = key[i]
        perm[lo + fill[b]] = lo + i
        fill[b] += 1
    for b in range(n):
        a = lo + start[b]
        e = lo + start[b + 1]
        if e - a > config.SMALL_BUCKET:
            seg = perm[a:e].copy()
            order = np.argsort(t[seg], kind="mergesort")  # seg is ascending: ties keep slot order
            for j in range(e - a):
                perm[a + j] = seg[order[j]]
            continue
        for j in range(a + 1, e):
            p = perm[j]
            x = t[p]
            i = j - 1
            while i >= a and t[perm[i]] > x:
                perm[i + 1] = perm[i]
                i -= 1
            perm[i + 1] = p


def window_order(t, unit_offsets, window_first_unit):
    """Permutation putting each window's arrivals in time order (stable: equal times keep unit order).

    Many windows: one task per window. Few (a fleet's chunk is one window of 10^6 clients): each
    large window is split by time into ranges sorted in parallel, so no core idles. The stable
    order is unique, so both paths give the same permutation."""
    n_windows = len(window_first_unit) - 1
    if n_windows >= 4 * get_num_threads():
        return _order_windows(t, unit_offsets, window_first_unit)
    perm = np.empty(len(t), np.int64)
    for i in range(n_windows):
        lo = int(unit_offsets[window_first_unit[i]])
        hi = int(unit_offsets[window_first_unit[i + 1]])
        if hi - lo >= config.SPLIT_WINDOW:
            _sort_window_parallel(t, lo, hi, perm)
        elif hi > lo:
            _sort_window(t, lo, hi, perm)
    return perm


@_pjit
def _order_windows(t, unit_offsets, window_first_unit):
    perm = np.empty(len(t), np.int64)
    for i in prange(len(window_first_unit) - 1):
        lo = unit_offsets[window_first_unit[i]]
        hi = unit_offsets[window_first_unit[i + 1]]
        if hi > lo:
            _sort_window(t, lo, hi, perm)
    return perm


@_pjit
def _sort_window_parallel(t, lo, hi, perm):
    """_sort_window's result for t[lo:hi], in parallel: slots are scattered (stably, by slot
    blocks) into time ranges that are monotone in t, then each range is sorted alone."""
    n = hi - lo
    nb = config.SPLIT_BLOCKS
    step = (n + nb - 1) // nb
    bmin = np.empty(nb, np.float64)
    bmax = np.empty(nb, np.float64)
    for b in prange(nb):
        a = lo + min(b * step, n)
        e = lo + min(b * step + step, n)
        x0 = np.inf
        x1 = -np.inf
        for i in range(a, e):
            if t[i] < x0:
                x0 = t[i]
            if t[i] > x1:
                x1 = t[i]
        bmin[b] = x0
        bmax[b] = x1
    tmin = bmin.min()
    tmax = bmax.max()
    if not tmax > tmin:
        _sort_window(t, lo, hi, perm)
        return
    nr = max(n // config.SPLIT_RANGE_ROWS, 1)
    f = nr / (tmax - tmin)
    hist = np.zeros((nb, nr), np.int64)
    for b in prange(nb):
        for i in range(lo + min(b * step, n), lo + min(b * step + step, n)):
            hist[b, min(int((t[i] - tmin) * f), nr - 1)] += 1
    # ranges in time order, slot blocks in order within a range: the scatter keeps slot order
    rstart = np.zeros(nr + 1, np.int64)
    acc = 0
    for r in range(nr):
        rstart[r] = acc
        for b in range(nb):
            c = hist[b, r]
            hist[b, r] = acc
            acc += c
    rstart[nr] = acc
    idx = np.empty(n, np.int64)
    for b in prange(nb):
        for i in range(lo + min(b * step, n), lo + min(b * step + step, n)):
            r = min(int((t[i] - tmin) * f), nr - 1)
            idx[hist[b, r]] = i
            hist[b, r] += 1
    for r in prange(nr):
        a = rstart[r]
        m = rstart[r + 1] - a
        if m == 0:
            continue
        v = np.empty(m, np.float64)
        for j in range(m):
            v[j] = t[idx[a + j]]
        p = np.empty(m, np.int64)
        _sort_window(v, 0, m, p)  # stable within the range; idx[a:a+m] ascends
        for j in range(m):
            perm[lo + a + j] = idx[a + p[j]]


@_pjit
def fill_base(corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff, out):
    """out[slot, f] = value of base field f for every arrival slot, in unit order.

    Unit order keeps one client's distributions hot in cache; callers gather by the time
    order afterwards.
    """
    sa = math.sqrt(rho)
    sb = math.sqrt(1.0 - rho)
    for u in prange(len(client)):
        lo = offsets[u]
        for k in range(offsets[u + 1] - lo):
            _base_row(corr_mode, sa, sb, seed, client[u], window[u], k, u, dist, values, cdf, doff, guide, goff,
                      out, lo + k)
    return out


@_pjit
def fill_rows(corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff, perm, t):
    """gather_rows of fill_base's values in one pass: (timestamp, client_id, base values [F, N])
    in the time order `perm`. Units are walked in order (their distributions stay in cache) and
    each row is written straight to its place in time order: no [N, F] values in slot order to
    gather again, no slot -> unit map (40% less CPU than the two kernels, benchmarks/README.md)."""
    n = len(perm)
    rank = np.empty(n, np.int64)
    for j in prange(n):
        rank[perm[j]] = j
    ts = np.empty(n, np.float64)
    cid = np.empty(n, np.uint32)
    out = np.empty((dist.shape[1], n), np.float64)
    rows = out.T  # base_row writes [row, field]
    sa = math.sqrt(rho)
    sb = math.sqrt(1.0 - rho)
    for u in prange(len(client)):
        lo = offsets[u]
        c = client[u]
        for k in range(offsets[u + 1] - lo):
            row = rank[lo + k]
            ts[row] = t[lo + k]
            cid[row] = c
            _base_row(corr_mode, sa, sb, seed, c, window[u], k, u, dist, values, cdf, doff, guide, goff, rows, row)
    return ts, cid, out


@_pjit
def fill_items(seed, client, window, k, counts, dist, item_offsets, field_slot, values, cdf, doff, guide, goff,
               out):
    for r in prange(len(k)):
        _item_values(seed, client[r], window[r], k[r], counts[r], dist[r], FIELD_ITEM + field_slot, values, cdf,
                     doff, guide, goff, out, item_offsets[r])


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


# --------------------------------------------------------------------------- sessions
_S = make_session_bodies(config.njit_inline, px._CPU, _B.lookup)
_slot_role = _S.slot_role
_expand_session = _S.expand_session
_row_blocks = _S.row_blocks


@_pjit
def session_roles(seed, client, window, k, prof, values, cdf, sguide, off, par):
    """(turns, prefix index) per request slot; turns 0: thinned away (kernels/session_bodies.py)."""
    n = len(k)
    turns = np.empty(n, np.int64)
    pid = np.empty(n, np.int64)
    for r in prange(n):
        turns[r], pid[r] = _slot_role(seed, client[r], window[r], k[r], prof[r], values, cdf, sguide, off, par)
    return turns, pid


@_pjit
def expand_turns(seed, client, window, k, prof, turns, ts, fin, fout, values, cdf, sguide, off, par, dist, vals, pv,
                 pc, pdoff, guide, goff, toff):
    """Later turns of the sessions started by these slots: rows toff[r] .. toff[r+1]-1 for slot r."""
    m = toff[len(toff) - 1]
    out_ts = np.empty(m, np.float64)
    out_vals = np.empty((m, vals.shape[1]), np.float64)
    out_think = np.empty(m, np.float64)
    out_turn = np.empty(m, np.int64)
    for r in prange(len(k)):
        if turns[r] > 1:
            _expand_session(seed, client[r], window[r], k[r], prof[r], turns[r], ts[r], fin, fout, values, cdf,
                            sguide, off, par, dist, vals, r, pv, pc, pdoff, guide, goff, out_ts, out_vals, out_think,
                            out_turn, toff[r])
    return out_ts, out_vals, out_think, out_turn


@_pjit
def fill_block_ids(seed, sid, client, pid, ptok, inp, bs, boff):
    """Block ids (int64) of every request's input, request r at boff[r] .. boff[r+1]-1."""
    out = np.empty(boff[len(boff) - 1], np.int64)
    for r in prange(len(sid)):
        _row_blocks(seed, sid[r], client[r], pid[r], ptok[r], inp[r], bs, out, boff[r])
    return out
