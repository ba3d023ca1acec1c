"""Numba CUDA kernels: the same contract as `cpu.py`, plus a device-resident chunk pipeline.

The per-op functions (count_renewal, fill_arrivals, window_order, fill_base, fill_items,
gather_rows) take and return host NumPy arrays, like cpu.py. `submit_ordered` runs a whole
chunk on the device on its own stream -- arrivals, window ordering, base lengths and the
gather into time order -- and copies only the ordered columns back, asynchronously, into
one of two sets of pinned host buffers; generate.py submits chunk k+1 before it hands
chunk k to the writer, so the GPU works while the host encodes and writes. The arithmetic
follows `cpu.py` operation for operation and draws the same keyed Philox randomness
(`philox.make_samplers` built with `cuda.jit(device=True)`), so integer columns are
identical and timestamps agree.

Parallel layout (grid-stride loops; launch sizes in the configuration block below):

* count_renewal / fill_arrivals: one thread per unit, sequential within the unit.
* window ordering: a bucket sort with about one bucket per arrival in each window
  (per-window min/max, bucket keys and counts with atomics, a segmented prefix scan, an
  atomic scatter), then one thread per bucket sorts it by (time, slot) -- insertion sort,
  or heap sort for buckets above 32 (clustered times). (time, slot) is a total order, so
  the result is the CPU's stable permutation whatever order the atomics ran in.
* fill_base: one thread per slot (its unit found by binary search on `offsets`).
* fill_items, gather: one thread per output row.

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

from . import config  # noqa: E402
from . import philox as px  # noqa: E402
from .bodies import FIELD_ITEM, make_bodies  # noqa: E402

# --------------------------------------------------------------------------- configuration
THREADS_PER_BLOCK = config.CUDA_THREADS_PER_BLOCK
MAX_BLOCKS = config.CUDA_MAX_BLOCKS
SCAN_SEGMENTS = config.CUDA_SCAN_SEGMENTS
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


def window_order(t, unit_offsets, window_first_unit):
    """Permutation putting each window's arrivals in time order (stable: equal times keep unit order).

    Every slot must lie in a window (bounds cover [0, len(t)), as generate.py's always do).
    """
    n = len(t)
    if n == 0:
        return np.zeros(0, np.int64)
    bounds = np.asarray(unit_offsets, np.int64)[np.asarray(window_first_unit, np.int64)]
    return _order(_dev(t, np.float64), _dev(bounds), len(bounds) - 1).copy_to_host()


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


# --------------------------------------------------------------------------- device-resident chunks
class _Tables:
    """Device copies of the distribution tables, uploaded once per table set (they are the
    same for every chunk of a trace)."""

    def __init__(self):
        self._host = None
        self._dev = None

    def get(self, arrays, stream):
        if self._host is None or len(self._host) != len(arrays) or \
                any(a is not b for a, b in zip(self._host, arrays)):
            self._dev = [_dev_async(a, stream) for a in arrays]
            self._host = list(arrays)  # holding them keeps their identity valid
        return self._dev


class _PinnedRing:
    """Two sets of page-locked host buffers, used in turn: chunk k+1 copies into one set
    while chunk k is read out of the other. Buffers grow to the largest chunk seen."""

    def __init__(self):
        self._slots = [{}, {}]
        self._next = 0

    def take(self):
        i = self._next
        self._next = 1 - i
        return self._slots[i]

    @staticmethod
    def buffer(slot, name, shape, dtype):
        size = int(np.prod(shape))
        have = slot.get(name)
        if have is None or have.size < size or have.dtype != dtype:
            have = cuda.pinned_array(max(size, 1), dtype)
            slot[name] = have
        return have[:size].reshape(shape)


_tables = _Tables()
_pinned = _PinnedRing()
_pending = []  # chunks submitted and not yet read out, oldest first


def _dev_async(a, stream):
    return cuda.to_device(np.ascontiguousarray(a), stream=stream)


class PendingChunk:
    """A chunk whose kernels and copies are queued on their own stream; result() waits for it."""

    def __init__(self, stream, host, n):
        self._stream = stream
        self._host = host
        self._n = n
        self._result = None

    def result(self):
        if self._result is None:
            self._stream.synchronize()
            h = self._host
            # copies: the pinned buffers are reused two chunks later
            self._result = (h["ts"].copy(), h["cid"].copy(), h["out"].copy(),
                            h["perm"].copy() if "perm" in h else None, h["unit"].copy() if "unit" in h else None)
            self._host = None
            if self in _pending:
                _pending.remove(self)
        return self._result


def submit_ordered(mode, seed, client, window, start, length, law, k, scale, offsets, first_unit, corr_mode, rho,
                   dist, tables, want_units):
    """Queue one chunk on the GPU: arrivals, window ordering, base lengths in unit order and the
    gather into time order all stay on the device; only the ordered columns are copied back
    (asynchronously, into pinned buffers). Returns a PendingChunk whose result() is
    (timestamps, client ids, base values [F, N], perm or None, unit of each row or None),
    the same as the CPU composition of fill_arrivals, window_order, fill_base and gather_rows.
    """
    while len(_pending) >= 2:  # the ring has two buffer sets: at most two chunks in flight
        _pending[0].result()
    n = int(offsets[-1])
    nf = dist.shape[1]
    stream = cuda.stream()
    slot = _pinned.take()
    host = {"ts": _PinnedRing.buffer(slot, "ts", (n,), np.float64),
            "cid": _PinnedRing.buffer(slot, "cid", (n,), np.uint32),
            "out": _PinnedRing.buffer(slot, "out", (nf, n), np.float64)}
    if want_units:
        host["perm"] = _PinnedRing.buffer(slot, "perm", (n,), np.int64)
        host["unit"] = _PinnedRing.buffer(slot, "unit", (n,), np.int64)
    job = PendingChunk(stream, host, n)
    if n == 0:
        return job
    start = np.asarray(start, np.float64)
    length = np.asarray(length, np.float64)
    below = np.nextafter(start + length, -np.inf)
    d_client = _dev_async(np.asarray(client, np.uint32), stream)
    d_window = _dev_async(window, stream)
    d_off = _dev_async(np.asarray(offsets, np.int64), stream)
    d_t = cuda.device_array(n, np.float64, stream=stream)
    _launch(_fill_arrivals_k, len(law), np.int64(mode), np.uint64(seed), d_client, d_window, _dev_async(start, stream),
            _dev_async(length, stream), _dev_async(below, stream), _dev_async(law, stream), _dev_async(k, stream),
            _dev_async(scale, stream), d_off, d_t, stream=stream)
    bounds = np.asarray(offsets, np.int64)[np.asarray(first_unit, np.int64)]
    d_perm = _order(d_t, _dev_async(bounds, stream), len(bounds) - 1, stream)
    d_vals = cuda.device_array((n, max(nf, 1)), np.float64, stream=stream)
    if nf:
        values, cdf, doff, guide, goff = _tables.get(tables, stream)
        _launch(_fill_base_k, n, np.int64(corr_mode), np.float64(math.sqrt(rho)), np.float64(math.sqrt(1.0 - rho)),
                np.uint64(seed), d_off, d_client, d_window, _dev_async(np.asarray(dist, np.int64), stream), values,
                cdf, doff, guide, goff, d_vals, stream=stream)
    d_ts = cuda.device_array(n, np.float64, stream=stream)
    d_cid = cuda.device_array(n, np.uint32, stream=stream)
    d_out = cuda.device_array((max(nf, 1), n), np.float64, stream=stream)
    d_unit = cuda.device_array(n, np.int64, stream=stream)
    _launch(_gather_ordered_k, n, d_perm, d_off, d_client, d_t, d_vals, np.int64(nf), d_ts, d_cid, d_out, d_unit,
            bool(want_units), stream=stream)
    d_ts.copy_to_host(host["ts"], stream=stream)
    d_cid.copy_to_host(host["cid"], stream=stream)
    if nf:
        d_out.copy_to_host(host["out"], stream=stream)
    if want_units:
        d_perm.copy_to_host(host["perm"], stream=stream)
        d_unit.copy_to_host(host["unit"], stream=stream)
    _pending.append(job)
    return job
