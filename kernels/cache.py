"""LRU stack distances of a block-id sequence (prefix-cache analysis), compiled, with a plain
Python twin for tests.

The stack distance of an access is the number of distinct blocks touched since the previous
access to the same block (-1: first access). An LRU cache of C blocks hits exactly the accesses
with 0 <= distance < C, so one pass gives the hit ratio at every size. A Fenwick tree over
access times marks each block's latest access; the distance is the count of marks strictly
between the previous and the current access: O(n log n).
"""
from __future__ import annotations

import numpy as np

from . import config


@config.njit
def stack_distances(ids):
    n = len(ids)
    out = np.full(n, -1, np.int64)
    tree = np.zeros(n + 1, np.int64)
    last = dict()
    last[np.int64(0)] = np.int64(0)
    del last[np.int64(0)]
    for t in range(n):
        x = ids[t]
        if x in last:
            p = last[x]
            # marks in (p, t): prefix(t - 1) - prefix(p)
            s = 0
            i = t  # prefix over positions 1..t (position = time + 1) -> times 0..t-1
            while i > 0:
                s += tree[i]
                i -= i & (-i)
            i = p + 1
            while i > 0:
                s -= tree[i]
                i -= i & (-i)
            out[t] = s
            i = p + 1
            while i <= n:
                tree[i] -= 1
                i += i & (-i)
        i = t + 1
        while i <= n:
            tree[i] += 1
            i += i & (-i)
        last[x] = t
    return out


def lru_hits_reference(ids, capacity: int) -> int:
    """Hits of an LRU cache of `capacity` blocks, simulated directly (the twin)."""
    from collections import OrderedDict

    cache = OrderedDict()
    hits = 0
    for x in np.asarray(ids).tolist():
        if x in cache:
            hits += 1
            cache.move_to_end(x)
        else:
            cache[x] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits
