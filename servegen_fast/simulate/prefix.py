"""Prefix reuse in each instance's paged KV cache, compiled (Numba); the simulator's model of
vLLM's automatic prefix caching, with replay's rules for which blocks count (replay/cache.py).

A request's prompt has block ids at the instance's page size (io/blocks.py `hash_ids`, the
trace's keyed ids; only full prompt blocks are cached). When it is taken from the queue with
nothing computed (new, or preempted), its leading blocks found in its instance's cache — at
most (prompt − 1) tokens rounded down to a block, as the last prompt token is always computed —
are shared, not prefilled: its context starts at hits × page (`cached` records the first
admission's). A cached block has a reference count; one no request references stays cached
but counts as free, and the least recently released of those are evicted when an allocation
needs more blocks than are empty (a request releases its blocks last-first, so its leading,
most shared blocks are evicted last). A prompt block is registered in the cache once its
prefill completes; if an equal block is cached meanwhile, the request shares that one and
returns its own copy. Output blocks are not cached (a trace's next turn holds the trace's
keyed text, not the model's output; replay/cache.py).

State, one tuple `pc` of int64 arrays: boff, bids (ragged block ids per request), nreg (each
request's leading blocks registered in the cache), cached (tokens, -1 before admission), conf
([kv_blocks, on]), evict (evictable blocks per instance), tval (open-addressing table of entry
indices, -1 empty), ekey, eref, eprev, enext (entries: block id, references, evictable LRU
links), lru (head, tail per instance: 2i, 2i + 1), pool, ptop (free entries per instance; an
instance's entries are i·kv_blocks .. (i + 1)·kv_blocks − 1).
"""
from __future__ import annotations

import numpy as np

from ..kernels.config import njit, njit_inline

NONE = -1
BOFF, BIDS, NREG, CACHED, CONF, EVICT, TVAL, EKEY, EREF, EPREV, ENEXT, LRU, POOL, PTOP = range(14)


def make_state(n_inst: int, kv_blocks: int, boff, bids, n: int) -> tuple:
    """The `pc` tuple; `boff` None: no block ids, reuse off (small placeholder arrays)."""
    on = boff is not None
    if not on:
        boff, bids = np.zeros(n + 1, np.int64), np.zeros(1, np.int64)
    ent = n_inst * kv_blocks if on else 1
    size = 1 << max(int(2 * ent - 1).bit_length(), 1)  # load factor <= 1/2
    pool = np.arange(ent, dtype=np.int64)
    ptop = np.full(n_inst, kv_blocks if on else 0, np.int64)
    return (np.asarray(boff, np.int64), np.asarray(bids, np.int64), np.zeros(n, np.int64), np.full(n, -1, np.int64),
            np.array([kv_blocks, int(on)], np.int64), np.zeros(n_inst, np.int64), np.full(size, NONE, np.int64),
            np.zeros(ent, np.int64), np.zeros(ent, np.int64), np.full(ent, NONE, np.int64),
            np.full(ent, NONE, np.int64), np.full(2 * n_inst, NONE, np.int64), pool, ptop)


@njit_inline
def _home(key, i, mask):
    h = key * 0x7F4A7C159E3779B9 + i * 0x2545F4914F6CDD1D
    return (h ^ (h >> 29)) & mask


@njit
def _find(pc, i, key):
    """Slot of (instance i, block id key) in the table, or of the empty slot ending its probe."""
    tval, ekey = pc[TVAL], pc[EKEY]
    kv = pc[CONF][0]
    mask = tval.shape[0] - 1
    h = _home(key, i, mask)
    while tval[h] != NONE:
        e = tval[h]
        if ekey[e] == key and e // kv == i:
            return h
        h = (h + 1) & mask
    return h


@njit
def _unlink(pc, i, e):
    prv, nx, lru = pc[EPREV], pc[ENEXT], pc[LRU]
    if prv[e] != NONE:
        nx[prv[e]] = nx[e]
    else:
        lru[2 * i] = nx[e]
    if nx[e] != NONE:
        prv[nx[e]] = prv[e]
    else:
        lru[2 * i + 1] = prv[e]
    prv[e] = NONE
    nx[e] = NONE
    pc[EVICT][i] -= 1


@njit
def _drop(pc, i, e):
    """Remove entry e (evictable) from instance i's cache: table (backward shift), pool."""
    tval, ekey = pc[TVAL], pc[EKEY]
    kv = pc[CONF][0]
    mask = tval.shape[0] - 1
    pos = _find(pc, i, ekey[e])
    j = pos
    while True:
        j = (j + 1) & mask
        f = tval[j]
        if f == NONE:
            break
        k = _home(ekey[f], f // kv, mask)
        if (pos < j and pos < k <= j) or (pos > j and (k > pos or k <= j)):
            continue  # its probe does not pass pos: it stays
        tval[pos] = f
        pos = j
    tval[pos] = NONE
    _unlink(pc, i, e)
    pc[POOL][i * kv + pc[PTOP][i]] = e
    pc[PTOP][i] += 1


@njit
def hits(pc, i, r, inp, page):
    """Leading cached blocks of request r's prompt on instance i, and how many are evictable."""
    if pc[CONF][1] == 0:
        return 0, 0
    off, ids, tval, eref = pc[BOFF][r], pc[BIDS], pc[TVAL], pc[EREF]
    usable = min((inp[r] - 1) // page, pc[BOFF][r + 1] - off)
    h = 0
    ev = 0
    while h < usable:
        e = tval[_find(pc, i, ids[off + h])]
        if e == NONE:
            break
        if eref[e] == 0:
            ev += 1
        h += 1
    return h, ev


@njit
def acquire(pc, i, r, h, free):
    """Request r (nothing computed yet) shares its first h prompt blocks, found by `hits`."""
    off, ids, tval, eref = pc[BOFF][r], pc[BIDS], pc[TVAL], pc[EREF]
    for b in range(h):
        e = tval[_find(pc, i, ids[off + b])]
        if eref[e] == 0:
            _unlink(pc, i, e)
            free[i] -= 1
        eref[e] += 1
    pc[NREG][r] = h


@njit
def take(pc, i, need, free):
    """Allocate `need` blocks (need <= free[i]): empty ones first, then evict cached LRU ones."""
    short = need - (free[i] - pc[EVICT][i])
    lru = pc[LRU]
    for _ in range(short):
        _drop(pc, i, lru[2 * i])
    free[i] -= need


@njit
def release(pc, i, r, blocks, free):
    """Request r gives back its blocks (completion or preemption): cached ones it alone
    referenced become evictable (appended last-first), its own ones free."""
    n = pc[NREG][r]
    off, ids, tval, eref, prv, nx, lru = pc[BOFF][r], pc[BIDS], pc[TVAL], pc[EREF], pc[EPREV], pc[ENEXT], pc[LRU]
    for b in range(n - 1, -1, -1):
        e = tval[_find(pc, i, ids[off + b])]
        eref[e] -= 1
        if eref[e] == 0:
            t = lru[2 * i + 1]
            prv[e] = t
            nx[e] = NONE
            if t != NONE:
                nx[t] = e
            else:
                lru[2 * i] = e
            lru[2 * i + 1] = e
            pc[EVICT][i] += 1
            free[i] += 1
    free[i] += blocks[r] - n
    blocks[r] = 0
    pc[NREG][r] = 0


@njit
def register(pc, i, r, ctx, inp, page, free):
    """Request r's prompt blocks complete up to ctx[r] join the cache (or share an equal one)."""
    if pc[CONF][1] == 0:
        return
    off, ids, tval, eref, ekey = pc[BOFF][r], pc[BIDS], pc[TVAL], pc[EREF], pc[EKEY]
    kv = pc[CONF][0]
    full = min(min(ctx[r], inp[r]) // page, pc[BOFF][r + 1] - off)
    for b in range(pc[NREG][r], full):
        key = ids[off + b]
        s = _find(pc, i, key)
        e = tval[s]
        if e != NONE:  # cached meanwhile: share it, give back the own copy
            if eref[e] == 0:
                _unlink(pc, i, e)
                free[i] -= 1
            eref[e] += 1
            free[i] += 1
        else:
            pc[PTOP][i] -= 1
            e = pc[POOL][i * kv + pc[PTOP][i]]
            ekey[e] = key
            eref[e] = 1
            tval[s] = e
        pc[NREG][r] += 1
