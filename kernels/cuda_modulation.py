"""CUDA twin of `modulation.warp_arrivals` (one thread per unit, grid-stride), from the same scalar source."""
from __future__ import annotations

import numpy as np
from numba import cuda

from . import philox as px
from .modulation import make_modulation

_djit = cuda.jit(device=True)
_warp_unit = make_modulation(_djit, px.make_samplers(_djit)).warp_unit


@cuda.jit
def _warp_arrivals_k(seed, client, window, start, length, below, sigma, tau, offsets, out_t):
    for u in range(cuda.grid(1), len(sigma), cuda.gridsize(1)):
        lo = offsets[u]
        m = offsets[u + 1] - lo
        if m > 0 and sigma[u] > 0.0:
            _warp_unit(seed, client[u], window[u], start[u], length[u], below[u], sigma[u], tau[u], lo, m, out_t)


def launch_warp(launch, dev, seed, client, window, start, length, sigma, tau, d_off, d_t, stream=0):
    """Queue the warp of a chunk's device arrivals `d_t` (`dev` copies a host array to the device)."""
    start = np.asarray(start, np.float64)
    length = np.asarray(length, np.float64)
    below = np.nextafter(start + length, -np.inf)
    launch(_warp_arrivals_k, len(sigma), np.uint64(seed), client, window, dev(start), dev(length), dev(below),
           dev(np.asarray(sigma, np.float64)), dev(np.asarray(tau, np.float64)), d_off, d_t, stream=stream)
