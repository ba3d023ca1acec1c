"""Row movement for the session stream (sample/sessions.py): the merge of first turns and later
turns into one time order, and the parallel scatter of columns into it. Pure data movement
(no randomness, no arithmetic on values), so every backend's rows pass through it unchanged."""
from __future__ import annotations

import numpy as np
from numba import prange

from . import config


@config.njit
def merge_positions(ta, sa, tb, sb):
    """Output positions of rows a (sorted by (time, session id), turn 0) and rows b (sorted by
    (time, session id, turn), turns >= 1) merged by (time, session id, turn)."""
    na, nb = len(ta), len(tb)
    pos_a = np.empty(na, np.int64)
    pos_b = np.empty(nb, np.int64)
    i = 0
    j = 0
    while i < na or j < nb:
        if j >= nb or (i < na and (ta[i] < tb[j] or (ta[i] == tb[j] and sa[i] < sb[j]))):
            pos_a[i] = i + j
            i += 1
        else:
            pos_b[j] = i + j
            j += 1
    return pos_a, pos_b


@config.njit_parallel
def place_indexed(out, pos_a, src_a, idx_a, pos_b, src_b):
    """out[pos_a[i]] = src_a[idx_a[i]]; out[pos_b[j]] = src_b[j]."""
    for i in prange(len(pos_a)):
        out[pos_a[i]] = src_a[idx_a[i]]
    for j in prange(len(pos_b)):
        out[pos_b[j]] = src_b[j]
    return out


@config.njit_parallel
def place_direct(out, pos_a, src_a, pos_b, src_b):
    """out[pos_a[i]] = src_a[i]; out[pos_b[j]] = src_b[j]."""
    for i in prange(len(pos_a)):
        out[pos_a[i]] = src_a[i]
    for j in prange(len(pos_b)):
        out[pos_b[j]] = src_b[j]
    return out
