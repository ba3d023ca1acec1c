"""Device-resident chunks: a whole chunk (arrivals, window ordering, base lengths, the gather
into time order) runs on the device on its own stream, and only the ordered columns come back,
asynchronously, into one of two sets of pinned host buffers (see `cuda.py`)."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .cuda_modulation import launch_warp
from .cuda_kernels import _fill_arrivals_k, _fill_base_k, _gather_ordered_k, _launch, _order, _place_arrivals_k

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
                   dist, tables, want_units, mod=None, pre=None):
    """Queue one chunk on the GPU: arrivals, window ordering, base lengths in unit order and the
    gather into time order all stay on the device; only the ordered columns are copied back
    (asynchronously, into pinned buffers). Returns a PendingChunk whose result() is
    (timestamps, client ids, base values [F, N], perm or None, unit of each row or None),
    the same as the CPU composition of fill_arrivals, window_order, fill_base and gather_rows.
    `pre` is renewal_arrivals' (room_off, first), the arrival times its count kept, or None.
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
    head = (np.int64(mode), np.uint64(seed), d_client, d_window, _dev_async(start, stream), _dev_async(length, stream),
            _dev_async(below, stream), _dev_async(law, stream), _dev_async(k, stream), _dev_async(scale, stream), d_off)
    if pre is None:
        _launch(_fill_arrivals_k, len(law), *head, d_t, stream=stream)
    else:
        _launch(_place_arrivals_k, len(pre[0]) - 1, *head, _dev_async(np.asarray(pre[0], np.int64), stream),
                _dev_async(np.append(pre[1], 0.0), stream), d_t, stream=stream)
    if mod is not None:  # intra-window modulation (kernels/modulation.py): (sigma, tau) per unit
        launch_warp(_launch, lambda a: _dev_async(a, stream), seed, d_client, d_window, start, length, mod[0], mod[1],
                    d_off, d_t, stream=stream)
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
