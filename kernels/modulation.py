"""Intra-window rate modulation: a keyed log-normal intensity that warps a window's arrivals.

A unit (client, window) with modulation sigma > 0 and segment length tau cuts its window
[start, start + L) into K = ceil(L / tau) segments (the last one truncated). Segment j gets
the weight w_j = exp(sigma * z_j), z_j a standard normal drawn keyed by
(seed, client, window, FIELD_MODULATION, j) (Box-Muller, cos branch). The intensity in
segment j is proportional to w_j and scaled so that its integral over the window is L, and
the unit's arrivals (from any arrival mode, ascending) are mapped through the inverse of the
cumulative intensity: a = start + x, x in [0, L) goes to the time where the cumulative
intensity reaches x. The map is monotone and onto the window, so the unit keeps its count
and its order; rates move between segments of the window (burstiness at the scale tau)
while the window's count, hence the pool's rate series, is untouched. sigma = 0 (or no
modulation arrays at all) leaves the arrivals exactly as they were: ServeGen's plain windows.

One scalar source (`make_modulation`) is compiled for the CPU (below) and for CUDA
(cuda_modulation.py); `warp_arrivals_np` is the plain twin, written operation for operation
like the compiled body (sequential sums; exp, log, cos via libm).
"""
from __future__ import annotations

import math
import types

import numpy as np
from numba import prange

from . import config
from . import philox as px

FIELD_MODULATION = 12  # Philox stream of the segment normals (field ids < 16 are the generator's)
_TWO_PI = 2.0 * math.pi


def make_modulation(jit, s):
    """Compile the per-unit warp with `jit` over the samplers namespace `s` (philox.make_samplers)."""
    uniform2 = s.uniform2

    @jit
    def weight(sigma, seed, client, window, j):
        u1, u2 = uniform2(seed, client, window, FIELD_MODULATION, j)
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)
        return math.exp(sigma * z)

    @jit
    def warp_unit(seed, client, window, start, length, below, sigma, tau, lo, m, out_t):
        """Warp the ascending arrivals out_t[lo:lo+m] of one unit (see the module docstring)."""
        k = int(math.ceil(length / tau))
        if k < 1:
            k = 1
        total = 0.0
        for j in range(k):
            seg = tau if j < k - 1 else length - tau * (k - 1)
            total = total + weight(sigma, seed, client, window, j) * seg
        f = length / total
        j = 0
        w = weight(sigma, seed, client, window, 0) * f
        seg = tau if k > 1 else length
        c = 0.0
        nxt = w * seg
        for i in range(m):
            x = out_t[lo + i] - start
            while x >= nxt and j < k - 1:
                j += 1
                c = nxt
                w = weight(sigma, seed, client, window, j) * f
                seg = tau if j < k - 1 else length - tau * (k - 1)
                nxt = c + w * seg
            t = start + (tau * j + (x - c) / w)
            if t > below:
                t = below
            if t < start:
                t = start
            out_t[lo + i] = t

    return types.SimpleNamespace(weight=weight, warp_unit=warp_unit)


_M = make_modulation(config.njit_inline, px._CPU)
_warp_unit = _M.warp_unit


@config.njit_parallel
def warp_arrivals(seed, client, window, start, length, sigma, tau, offsets, out_t):
    """Warp every unit with sigma > 0 in place (units are independent: one per iteration)."""
    for u in prange(len(sigma)):
        lo = offsets[u]
        m = offsets[u + 1] - lo
        if m > 0 and sigma[u] > 0.0:
            below = np.nextafter(start[u] + length[u], -np.inf)
            _warp_unit(seed, client[u], window[u], start[u], length[u], below, sigma[u], tau[u], lo, m, out_t)


def _weights_np(sigma, seed, client, window, k):
    u1, u2 = px.uniform2_np(seed, np.full(k, client, np.uint64), np.full(k, window, np.uint64), FIELD_MODULATION,
                            np.arange(k, dtype=np.uint64))
    return [math.exp(sigma * (math.sqrt(-2.0 * math.log(a)) * math.cos(_TWO_PI * b)))
            for a, b in zip(u1.tolist(), u2.tolist())]


def warp_arrivals_np(seed, client, window, start, length, sigma, tau, offsets, out_t):
    """Plain twin of `warp_arrivals` (the numpy backend and the tests' oracle)."""
    for u in range(len(sigma)):
        lo, m = int(offsets[u]), int(offsets[u + 1] - offsets[u])
        if m == 0 or not sigma[u] > 0.0:
            continue
        s0, L, tu = float(start[u]), float(length[u]), float(tau[u])
        below = float(np.nextafter(s0 + L, -np.inf))
        k = max(int(math.ceil(L / tu)), 1)
        w = _weights_np(float(sigma[u]), int(seed), int(client[u]), int(window[u]), k)
        segs = [tu if j < k - 1 else L - tu * (k - 1) for j in range(k)]
        total = 0.0
        for j in range(k):
            total = total + w[j] * segs[j]
        f = L / total
        j, c = 0, 0.0
        wj = w[0] * f
        nxt = wj * segs[0]
        for i in range(m):
            x = float(out_t[lo + i]) - s0
            while x >= nxt and j < k - 1:
                j += 1
                c = nxt
                wj = w[j] * f
                nxt = c + wj * segs[j]
            t = s0 + (tu * j + (x - c) / wj)
            out_t[lo + i] = min(max(t, s0), below)
