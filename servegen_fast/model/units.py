"""Units: the (client, window) pairs of one chunk with a positive target rate, and their parameters.

Pools and populations both describe a chunk of windows this way; the sampler needs nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Units:
    """Window-major (all clients of the chunk's first window, then the next...). `wi` is the
    window within the chunk; `dist` holds every field's distribution id, in the pool's field order."""
    wi: np.ndarray       # int64[U]
    client: np.ndarray   # uint32[U] client id (keys the RNG)
    window: np.ndarray   # uint32[U] window index (keys the RNG)
    start: np.ndarray    # float64[U] window start, seconds from the view start
    length: np.ndarray   # float64[U]
    rate: np.ndarray     # float64[U] target rate
    law: np.ndarray      # int64[U]
    shape: np.ndarray    # float64[U]
    cv: np.ndarray       # float64[U]
    dist: np.ndarray     # int64[U, F]
    mod: tuple | None = None  # (sigma, tau) float64[U] intra-window modulation; None: plain windows


def modulation(sigma, tau, ci, wi):
    """Units' (sigma, tau) of the intra-window modulation (kernels/modulation.py) gathered from
    [C, W] arrays, None when no unit is modulated (the arrivals are then the plain windows')."""
    if sigma is None:
        return None
    s = np.ascontiguousarray(sigma[ci, wi], np.float64)
    return (s, np.ascontiguousarray(tau[ci, wi], np.float64)) if (s > 0).any() else None
