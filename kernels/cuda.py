"""Numba CUDA kernels: the same contract as `cpu.py` (host NumPy arrays in and out).

Each public function copies its inputs to the device, launches one kernel (grid-stride
loops) and copies the result back. The arithmetic follows `cpu.py` operation for
operation and draws the same keyed Philox randomness (`philox.make_samplers` built with
`cuda.jit(device=True)`), so integer columns are identical and timestamps agree.

Parallel layout:

* count_renewal / fill_arrivals: one thread per unit, sequential within the unit.
* window_order: one thread per arrival slot; its rank inside its window is
  #(smaller t) + #(equal t at a smaller slot) — a stable sort, O(n_w) work per slot, so
  O(sum over windows of n_w²) in all (fine for small windows and the simulator; a segmented
  radix sort is the scalable replacement).
* fill_base: one thread per slot (its unit found by binary search on `offsets`).
* fill_items, gather_rows: one thread per output row.

Works under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which tests use.
"""
from __future__ import annotations

import math
import os

import numpy as np

try:
    from numba import cuda
except ImportError as e:  # numba without the CUDA target (numba-cuda not installed)
    raise ImportError("numba.cuda is not importable; install numba-cuda and run on a machine with an "
                      f"NVIDIA GPU, or use backend='cpu' ({e})") from None

try:
    _available = cuda.is_available()
except Exception:  # noqa: BLE001 - a broken driver/toolkit reads as "not available"
    _available = False
if not _available:
    raise ImportError("no CUDA GPU/driver found; install numba-cuda and run on a machine with an NVIDIA GPU, "
                      "or use backend='cpu'")

from . import philox as px  # noqa: E402
from .bodies import FIELD_ITEM, make_bodies  # noqa: E402

# --------------------------------------------------------------------------- configuration
THREADS_PER_BLOCK = int(os.environ.get("SERVEGEN_FAST_CUDA_TPB", "256"))
MAX_BLOCKS = int(os.environ.get("SERVEGEN_FAST_CUDA_MAX_BLOCKS", "65535"))
SIMULATOR = bool(getattr(cuda, "simulator_enabled", False)) or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

_djit = cuda.jit(device=True)
_B = make_bodies(_djit, px.make_samplers(_djit))
_count_unit = _B.count_unit
_fill_unit = _B.fill_unit
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
def _window_rank_k(t, bounds, perm):
    """perm[lo_w + rank] = slot, rank = #(t < t_slot) + #(t == t_slot at a smaller slot) in its window."""
    first = cuda.grid(1)
    stride = cuda.gridsize(1)
    nb = len(bounds)
    for i in range(first, len(t), stride):
        w = _upper_bound(bounds, nb, i) - 1  # window w holds [bounds[w], bounds[w + 1])
        lo = bounds[w]
        hi = bounds[w + 1]
        ti = t[i]
        r = 0
        for j in range(lo, hi):
            tj = t[j]
            if tj < ti or (tj == ti and j < i):
                r += 1
        perm[lo + r] = i


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


# --------------------------------------------------------------------------- host wrappers
def _dev(a, dtype=None):
    a = np.ascontiguousarray(a if dtype is None else np.asarray(a, dtype))
    return cuda.to_device(a)


def _launch(kernel, n, *args):
    kernel[_blocks(n), THREADS_PER_BLOCK](*args)


def count_renewal(seed, client, window, length, law, k, scale):
    n = len(law)
    if n == 0:
        return np.zeros(0, np.int64)
    counts = cuda.device_array(n, np.int64)
    _launch(_count_renewal_k, n, np.uint64(seed), _dev(client), _dev(window), _dev(length), _dev(law), _dev(k),
            _dev(scale), counts)
    return counts.copy_to_host()


def fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t):
    n = len(law)
    if n == 0 or len(out_t) == 0:
        return
    start = np.asarray(start, np.float64)
    length = np.asarray(length, np.float64)
    below = np.nextafter(start + length, -np.inf)  # cpu.py: nextafter(start[u] + length[u], -inf)
    d_out = cuda.device_array(len(out_t), np.float64)
    _launch(_fill_arrivals_k, n, np.int64(mode), np.uint64(seed), _dev(client), _dev(window), _dev(start),
            _dev(length), _dev(below), _dev(law), _dev(k), _dev(scale), _dev(offsets, np.int64), d_out)
    out_t[:] = d_out.copy_to_host()


def window_order(t, unit_offsets, window_first_unit):
    """Permutation putting each window's arrivals in time order (stable: equal times keep unit order)."""
    n = len(t)
    if n == 0:
        return np.zeros(0, np.int64)
    bounds = np.asarray(unit_offsets, np.int64)[np.asarray(window_first_unit, np.int64)]
    perm = np.arange(n, dtype=np.int64)  # slots outside every window keep their place, as in cpu.py's
    # np.empty only where windows do not cover [0, n) -- generate.py always covers it
    d_perm = cuda.to_device(perm)
    _launch(_window_rank_k, n, _dev(t, np.float64), _dev(bounds), d_perm)
    return d_perm.copy_to_host()


def fill_base(corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff, out):
    """out[slot, f] = value of base field f for every arrival slot, in unit order."""
    n = out.shape[0]
    if n == 0 or out.shape[1] == 0:
        return out
    sa = math.sqrt(rho)
    sb = math.sqrt(1.0 - rho)
    d_out = cuda.device_array(out.shape, np.float64)
    _launch(_fill_base_k, n, np.int64(corr_mode), np.float64(sa), np.float64(sb), np.uint64(seed),
            _dev(offsets, np.int64), _dev(client), _dev(window), _dev(dist), _dev(values), _dev(cdf), _dev(doff),
            _dev(guide), _dev(goff), d_out)
    out[...] = d_out.copy_to_host()
    return out


def fill_items(seed, client, window, k, counts, dist, item_offsets, field_slot, values, cdf, doff, guide, goff,
               out):
    n = len(k)
    if n == 0 or len(out) == 0:
        return
    d_out = cuda.device_array(len(out), np.float64)
    _launch(_fill_items_k, n, np.uint64(seed), _dev(client), _dev(window), _dev(k), _dev(counts), _dev(dist),
            _dev(item_offsets, np.int64), np.int64(FIELD_ITEM + field_slot), _dev(values), _dev(cdf), _dev(doff),
            _dev(guide), _dev(goff), d_out)
    out[:] = d_out.copy_to_host()


def gather_rows(perm, slot_unit, client, t, vals):
    """Rows in time order: timestamp, client_id and base field values (field-major [F, N])."""
    n = len(perm)
    nf = vals.shape[1]
    if n == 0:
        return np.empty(0, np.float64), np.empty(0, np.uint32), np.empty((nf, 0), np.float64)
    if nf == 0:  # no zero-size device arrays: a dummy column that the kernel never touches
        vals = np.zeros((len(t), 1), np.float64)
    ts = cuda.device_array(n, np.float64)
    cid = cuda.device_array(n, np.uint32)
    out = cuda.device_array((max(nf, 1), n), np.float64)
    _launch(_gather_rows_k, n, _dev(perm, np.int64), _dev(slot_unit, np.int64), _dev(client, np.uint32),
            _dev(t, np.float64), _dev(vals, np.float64), np.int64(nf), ts, cid, out)
    return ts.copy_to_host(), cid.copy_to_host(), out.copy_to_host()[:nf]
