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

Kernels and launch sizes: `cuda_kernels.py`; the device-resident pipeline: `cuda_chunks.py`.
Works under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which tests use.
"""
from __future__ import annotations

import math

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

from .bodies import FIELD_ITEM  # noqa: E402
from .cuda_kernels import (SIMULATOR, THREADS_PER_BLOCK, _blocks, _count_renewal_k,  # noqa: F401 (benchmarks, tests)
                           device_name, _dev, _fill_arrivals_k, _fill_base_k, _fill_items_k,  # noqa: E402
                           _gather_ordered_k, _gather_rows_k, _launch, _order,
                           _place_arrivals_k, _renewal_arrivals_k)
from .cuda_chunks import PendingChunk, submit_ordered  # noqa: E402,F401
from .cuda_modulation import launch_warp  # noqa: E402
from .reference import fill_rows_by  # noqa: E402


def count_renewal(seed, client, window, length, law, k, scale):
    n = len(law)
    if n == 0:
        return np.zeros(0, np.int64)
    counts = cuda.device_array(n, np.int64)
    _launch(_count_renewal_k, n, np.uint64(seed), _dev(client), _dev(window), _dev(length), _dev(law), _dev(k),
            _dev(scale), counts)
    return counts.copy_to_host()


def renewal_arrivals(seed, client, window, start, length, law, k, scale, room_off):
    n = len(law)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    start = np.asarray(start, np.float64)
    length = np.asarray(length, np.float64)
    below = np.nextafter(start + length, -np.inf)
    counts = cuda.device_array(n, np.int64)
    first = cuda.device_array(max(int(room_off[-1]), 1), np.float64)
    _launch(_renewal_arrivals_k, len(room_off) - 1, np.uint64(seed), _dev(client), _dev(window), _dev(start),
            _dev(length), _dev(below), _dev(law), _dev(k), _dev(scale), _dev(room_off, np.int64), counts, first)
    return counts.copy_to_host(), first.copy_to_host()[:int(room_off[-1])]


def fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t, room_off=None,
                  first=None):
    n = len(law)
    if n == 0 or len(out_t) == 0:
        return
    start = np.asarray(start, np.float64)
    length = np.asarray(length, np.float64)
    below = np.nextafter(start + length, -np.inf)  # cpu.py: nextafter(start[u] + length[u], -inf)
    d_out = cuda.device_array(len(out_t), np.float64)
    head = (np.int64(mode), np.uint64(seed), _dev(client), _dev(window), _dev(start), _dev(length), _dev(below),
            _dev(law), _dev(k), _dev(scale), _dev(offsets, np.int64))
    if room_off is None:
        _launch(_fill_arrivals_k, n, *head, d_out)
    else:
        _launch(_place_arrivals_k, len(room_off) - 1, *head, _dev(room_off, np.int64), _dev(np.append(first, 0.0)),
                d_out)
    out_t[:] = d_out.copy_to_host()


def warp_arrivals(seed, client, window, start, length, sigma, tau, offsets, out_t):
    """Intra-window modulation (kernels/modulation.py) of host arrivals out_t, in place."""
    if len(sigma) == 0 or len(out_t) == 0:
        return
    d_t = _dev(out_t, np.float64)
    launch_warp(_launch, _dev, seed, _dev(np.asarray(client, np.uint32)), _dev(window), start, length, sigma, tau,
                _dev(offsets, np.int64), d_t)
    out_t[:] = d_t.copy_to_host()


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


def fill_rows(*args):
    """gather_rows of fill_base's values: (timestamp, client_id, base values [F, N]) in the order `perm`."""
    return fill_rows_by(fill_base, gather_rows, *args)


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

__all__ = ["count_renewal", "renewal_arrivals", "fill_arrivals", "warp_arrivals", "window_order", "fill_base", "fill_rows", "fill_items", "gather_rows", "submit_ordered",
           "PendingChunk", "device_name", "SIMULATOR", "THREADS_PER_BLOCK",
           # kernels and launch helpers, for benchmarks/bench_cuda.py
           "_blocks", "_count_renewal_k", "_fill_arrivals_k", "_fill_base_k", "_gather_ordered_k", "_order"]

from .cuda_sessions import expand_turns, fill_block_ids, session_roles  # noqa: E402,F401

__all__ += ["session_roles", "expand_turns", "fill_block_ids"]
