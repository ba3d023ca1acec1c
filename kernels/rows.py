"""Row movement for the session stream (sample/sessions.py): the merge of first turns and later
turns into one time order, and the scatter of columns into it. Pure data movement
(no randomness, no arithmetic on values), so every backend's rows pass through it unchanged. The
scatters and first turns run in parallel (every row has its own output position): serial, they
left the second core idle while sessions-off generation used both; the merge is serial."""
from __future__ import annotations

import numpy as np
from numba import prange

from . import config


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


@config.njit_parallel
def first_turns(kept, client, window, k, prof, pid, prefix_first, values, inp, slot_bits, client_bits):
    """Session ids of the kept slots, (window << (slot + client bits)) | (client << slot bits) | k,
    and each first input raised to its shared prompt's length in place
    (prompt length = values[prefix_first[profile] + prefix index])."""
    sid = np.empty(len(kept), np.uint64)
    sw = np.uint64(slot_bits + client_bits)
    sc = np.uint64(slot_bits)
    for i in prange(len(kept)):
        r = kept[i]
        sid[i] = (np.uint64(window[r]) << sw) | (np.uint64(client[r]) << sc) | np.uint64(k[r])
        p = prof[r]
        if pid[r] >= 0 and p >= 0:
            tok = values[prefix_first[p] + pid[r]]
            if inp[r] < tok:
                inp[r] = tok
    return sid


@config.njit
def merge_sorted(ta, sa, ua, tb, sb, ub):
    """Output positions of two row sets, each sorted by (time, session id, turn), merged by that key."""
    na, nb = len(ta), len(tb)
    pos_a = np.empty(na, np.int64)
    pos_b = np.empty(nb, np.int64)
    i = 0
    j = 0
    while i < na or j < nb:
        take_a = j >= nb
        if not take_a and i < na:
            if ta[i] != tb[j]:
                take_a = ta[i] < tb[j]
            elif sa[i] != sb[j]:
                take_a = sa[i] < sb[j]
            else:
                take_a = ua[i] < ub[j]
        if take_a:
            pos_a[i] = i + j
            i += 1
        else:
            pos_b[j] = i + j
            j += 1
    return pos_a, pos_b
