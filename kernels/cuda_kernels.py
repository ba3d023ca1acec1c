"""The CUDA kernels and launch helpers behind `cuda.py` (imported only once a GPU, or the
simulator, is known to be there).

Parallel layout (grid-stride loops; launch sizes in the configuration block below):

* count_renewal / fill_arrivals: one thread per unit, sequential within the unit.
* window ordering: a bucket sort with about one bucket per arrival in each window
  (per-window min/max, bucket keys and counts with atomics, a segmented prefix scan, an
  atomic scatter), then one thread per bucket sorts it by (time, slot) -- insertion sort,
  or heap sort for buckets above 32 (clustered times). (time, slot) is a total order, so
  the result is the CPU's stable permutation whatever order the atomics ran in.
* fill_base: one thread per slot (its unit found by binary search on `offsets`).
* fill_items, gather: one thread per output row.

"""
from __future__ import annotations

import os

import numpy as np
from numba import cuda

from . import config
from . import philox as px
from .bodies import make_bodies
from .codes import ROOM_BLOCK

# --------------------------------------------------------------------------- configuration
THREADS_PER_BLOCK = config.CUDA_THREADS_PER_BLOCK
MAX_BLOCKS = config.CUDA_MAX_BLOCKS
SCAN_SEGMENTS = config.CUDA_SCAN_SEGMENTS
SIMULATOR = bool(getattr(cuda, "simulator_enabled", False)) or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

_djit = cuda.jit(device=True)
_B = make_bodies(_djit, px.make_samplers(_djit))
_count_unit = _B.count_unit
_fill_unit = _B.fill_unit
_count_fill_unit = _B.count_fill_unit
_base_row = _B.base_row
_item_values = _B.item_values


def _blocks(n: int) -> int:
    return max(1, min((n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, MAX_BLOCKS))


def device_name() -> str:
    if SIMULATOR:
        return "CUDA simulator"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


# --------------------------------------------------------------------------- device helpers
@_djit
def _upper_bound(a, n, x):
    """Number of entries of the sorted a[0:n] that are <= x."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


# --------------------------------------------------------------------------- kernels
@cuda.jit
def _count_renewal_k(seed, client, window, length, law, k, scale, counts):
    for u in range(cuda.grid(1), len(law), cuda.gridsize(1)):
        counts[u] = _count_unit(seed, client[u], window[u], length[u], law[u], k[u], scale[u])


@cuda.jit
def _fill_arrivals_k(mode, seed, client, window, start, length, below, law, k, scale, offsets, out_t):
    for u in range(cuda.grid(1), len(law), cuda.gridsize(1)):
        lo = offsets[u]
        m = offsets[u + 1] - lo
        if m > 0:
            _fill_unit(mode, seed, client[u], window[u], start[u], length[u], below[u], law[u], k[u], scale[u], lo, m,
                       out_t)


@cuda.jit
def _renewal_arrivals_k(seed, client, window, start, length, below, law, k, scale, room_off, counts, first):
    """One thread per block of ROOM_BLOCK units (cpu.py renewal_arrivals)."""
    n = len(law)
    for b in range(cuda.grid(1), len(room_off) - 1, cuda.gridsize(1)):
        lo = room_off[b]
        room = room_off[b + 1] - lo
        used = 0
        for u in range(b * ROOM_BLOCK, min(b * ROOM_BLOCK + ROOM_BLOCK, n)):
            c = _count_fill_unit(seed, client[u], window[u], start[u], length[u], below[u], law[u], k[u], scale[u],
                                 first, lo + used, max(room - used, 0))
            counts[u] = c
            used += c


@cuda.jit
def _place_arrivals_k(mode, seed, client, window, start, length, below, law, k, scale, offsets, room_off, first,
                      out_t):
    """_fill_arrivals_k, copying the units whose times _renewal_arrivals_k kept (cpu.py _place_arrivals)."""
    n = len(law)
    for b in range(cuda.grid(1), len(room_off) - 1, cuda.gridsize(1)):
        u0 = b * ROOM_BLOCK
        base = offsets[u0]
        lo = room_off[b]
        room = room_off[b + 1] - lo
        for u in range(u0, min(u0 + ROOM_BLOCK, n)):
            m = offsets[u + 1] - offsets[u]
            if m == 0:
                continue
            if offsets[u + 1] - base <= room:
                src = lo + offsets[u] - base
                for j in range(m):
                    out_t[offsets[u] + j] = first[src + j]
            else:
                _fill_unit(mode, seed, client[u], window[u], start[u], length[u], below[u], law[u], k[u], scale[u],
                           offsets[u], m, out_t)


# Window ordering: a bucket sort over about one bucket per arrival (times fill a window
# nearly uniformly). Buckets are filled with atomics in any order, then each bucket is sorted
# by (time, slot), a total order, so the result is the one stable permutation the CPU gives.
@cuda.jit
def _window_range_k(t, bounds, tmin, tmax):
    nb = len(bounds)
    for i in range(cuda.grid(1), len(t), cuda.gridsize(1)):
        w = _upper_bound(bounds, nb, i) - 1  # window w holds [bounds[w], bounds[w + 1])
        cuda.atomic.min(tmin, w, t[i])
        cuda.atomic.max(tmax, w, t[i])


@cuda.jit
def _bucket_k(t, bounds, tmin, tmax, key, cnt):
    nb = len(bounds)
    for i in range(cuda.grid(1), len(t), cuda.gridsize(1)):
        w = _upper_bound(bounds, nb, i) - 1
        lo = bounds[w]
        n = bounds[w + 1] - lo
        b = 0
        if tmax[w] > tmin[w]:
            b = min(int((t[i] - tmin[w]) * (n / (tmax[w] - tmin[w]))), n - 1)
        key[i] = lo + b
        cuda.atomic.add(cnt, lo + b, 1)


@cuda.jit
def _segment_sum_k(x, seg, part):
    n = len(x)
    for s in range(cuda.grid(1), len(part), cuda.gridsize(1)):
        acc = 0
        for i in range(s * seg, min(s * seg + seg, n)):
            acc += x[i]
        part[s] = acc


@cuda.jit
def _serial_scan_k(part):
    if cuda.grid(1) == 0:  # a few thousand partial sums: one thread is fast enough
        acc = 0
        for s in range(len(part)):
            v = part[s]
            part[s] = acc
            acc += v


@cuda.jit
def _segment_scan_k(x, seg, part, out):
    """out[i] = x[0] + ... + x[i - 1] for i in [0, len(x)]."""
    n = len(x)
    for s in range(cuda.grid(1), len(part), cuda.gridsize(1)):
        acc = part[s]
        e = min(s * seg + seg, n)
        for i in range(s * seg, e):
            out[i] = acc
            acc += x[i]
        if e == n:
            out[n] = acc


@cuda.jit
def _scatter_k(key, start, fill, perm):
    for i in range(cuda.grid(1), len(key), cuda.gridsize(1)):
        b = key[i]
        perm[start[b] + cuda.atomic.add(fill, b, 1)] = i


@_djit
def _before(t, p, q):
    return t[p] < t[q] or (t[p] == t[q] and p < q)


@_djit
def _sift_down(t, perm, a, root, end):
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and _before(t, perm[a + child], perm[a + child + 1]):
            child += 1
        if not _before(t, perm[a + root], perm[a + child]):
            return
        tmp = perm[a + root]
        perm[a + root] = perm[a + child]
        perm[a + child] = tmp
        root = child


@cuda.jit
def _sort_buckets_k(t, start, perm):
    for b in range(cuda.grid(1), len(start) - 1, cuda.gridsize(1)):
        a = start[b]
        n = start[b + 1] - a
        if n <= config.SMALL_BUCKET:  # the usual case: insertion sort of a handful
            for j in range(a + 1, a + n):
                p = perm[j]
                i = j - 1
                while i >= a and _before(t, p, perm[i]):
                    perm[i + 1] = perm[i]
                    i -= 1
                perm[i + 1] = p
        else:  # clustered times: heap sort keeps the worst case at n log n
            for root in range(n // 2 - 1, -1, -1):
                _sift_down(t, perm, a, root, n)
            for end in range(n - 1, 0, -1):
                tmp = perm[a]
                perm[a] = perm[a + end]
                perm[a + end] = tmp
                _sift_down(t, perm, a, 0, end)


@cuda.jit
def _fill_base_k(corr_mode, sa, sb, seed, offsets, client, window, dist, values, cdf, doff, guide, goff, out):
    n_units = len(client)
    for row in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        u = _upper_bound(offsets, n_units + 1, row) - 1  # offsets[u] <= row < offsets[u + 1]
        _base_row(corr_mode, sa, sb, seed, client[u], window[u], row - offsets[u], u, dist, values, cdf, doff, guide,
                  goff, out, row)


@cuda.jit
def _fill_items_k(seed, client, window, k, counts, dist, item_offsets, field, values, cdf, doff, guide, goff, out):
    for r in range(cuda.grid(1), len(k), cuda.gridsize(1)):
        _item_values(seed, client[r], window[r], k[r], counts[r], dist[r], field, values, cdf, doff, guide, goff, out,
                     item_offsets[r])


@cuda.jit
def _gather_rows_k(perm, slot_unit, client, t, vals, nf, ts, cid, out):
    first = cuda.grid(1)
    stride = cuda.gridsize(1)
    for j in range(first, len(perm), stride):
        src = perm[j]
        ts[j] = t[src]
        cid[j] = client[slot_unit[src]]
        for f in range(nf):
            out[f, j] = vals[src, f]


@cuda.jit
def _gather_ordered_k(perm, offsets, client, t, vals, nf, ts, cid, out, unit_out, want_unit):
    n_units = len(client)
    for j in range(cuda.grid(1), len(perm), cuda.gridsize(1)):
        src = perm[j]
        u = _upper_bound(offsets, n_units + 1, src) - 1
        ts[j] = t[src]
        cid[j] = client[u]
        for f in range(nf):
            out[f, j] = vals[src, f]
        if want_unit:
            unit_out[j] = u


# --------------------------------------------------------------------------- host wrappers
def _dev(a, dtype=None):
    a = np.ascontiguousarray(a if dtype is None else np.asarray(a, dtype))
    return cuda.to_device(a)


def _launch(kernel, n, *args, stream=0):
    kernel[_blocks(n), THREADS_PER_BLOCK, stream](*args)


def _scan(d_x, stream=0):
    """Device exclusive prefix sums of d_x (int64), length len(d_x) + 1."""
    n = len(d_x)
    seg = max(1, -(-n // SCAN_SEGMENTS))
    parts = -(-n // seg)
    d_part = cuda.device_array(parts, np.int64, stream=stream)
    d_out = cuda.device_array(n + 1, np.int64, stream=stream)
    _launch(_segment_sum_k, parts, d_x, np.int64(seg), d_part, stream=stream)
    _serial_scan_k[1, 1, stream](d_part)
    _launch(_segment_scan_k, parts, d_x, np.int64(seg), d_part, d_out, stream=stream)
    return d_out


def _order(d_t, d_bounds, n_windows, stream=0):
    """Device permutation putting each window's arrivals in time order (see _sort_buckets_k)."""
    n = len(d_t)
    tmin = cuda.to_device(np.full(n_windows, np.inf), stream=stream)
    tmax = cuda.to_device(np.full(n_windows, -np.inf), stream=stream)
    _launch(_window_range_k, n, d_t, d_bounds, tmin, tmax, stream=stream)
    key = cuda.device_array(n, np.int64, stream=stream)
    cnt = cuda.to_device(np.zeros(n, np.int64), stream=stream)
    _launch(_bucket_k, n, d_t, d_bounds, tmin, tmax, key, cnt, stream=stream)
    start = _scan(cnt, stream)
    fill = cuda.to_device(np.zeros(n, np.int64), stream=stream)
    perm = cuda.device_array(n, np.int64, stream=stream)
    _launch(_scatter_k, n, key, start, fill, perm, stream=stream)
    _launch(_sort_buckets_k, n, d_t, start, perm, stream=stream)
    return perm
