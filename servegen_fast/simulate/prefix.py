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

State: one int64 array `pc` (one argument, not a tuple of arrays, which the passes would pay
for on every call), segments starting at pc[SEGMENT]: boff, bids (ragged block ids per
request), nreg (each request's leading blocks registered in the cache), cached (tokens, -1
before admission), conf ([kv_blocks, on, table size]), evict (evictable blocks per instance),
tval (open-addressing table of entry indices, -1 empty), ekey, eref, eprev, enext (entries:
block id, references, evictable LRU links), lru (head, tail per instance: 2i, 2i + 1), pool,
ptop (free entries per instance; an instance's entries are i·kv_blocks .. (i + 1)·kv_blocks − 1).
Without block ids `pc` is None and every function takes its `pc is None` branch, which Numba
prunes at compile time: the passes compile to the cache-less model's code (calls left in the
pass loops, even never taken, made the event loop a third slower).
"""
from __future__ import annotations

import numpy as np

from ..kernels.config import njit, njit_inline

NONE = -1
BOFF, BIDS, NREG, CACHED, CONF, EVICT, TVAL, EKEY, EREF, EPREV, ENEXT, LRU, POOL, PTOP = range(14)


def make_state(n_inst: int, kv_blocks: int, boff, bids, n: int) -> np.ndarray | None:
    """The `pc` array; None without block ids (reuse off): the passes are then compiled with
    every `pc is None` branch pruned, as fast as without this module."""
    if boff is None:
        return None
    ent = n_inst * kv_blocks
    size = 1 << max(int(2 * ent - 1).bit_length(), 1)  # load factor <= 1/2
    parts = [np.asarray(boff, np.int64), np.asarray(bids, np.int64), np.zeros(n, np.int64), np.full(n, -1, np.int64),
             np.array([kv_blocks, 1, size], np.int64), np.zeros(n_inst, np.int64), np.full(size, NONE, np.int64),
             np.zeros(ent, np.int64), np.zeros(ent, np.int64), np.full(ent, NONE, np.int64),
             np.full(ent, NONE, np.int64), np.full(2 * n_inst, NONE, np.int64), np.arange(ent, dtype=np.int64),
             np.full(n_inst, kv_blocks, np.int64)]
    start = np.cumsum([len(parts)] + [len(p) for p in parts])[:-1]
    return np.concatenate([start.astype(np.int64)] + parts)


def enabled(pc: np.ndarray | None) -> bool:
    return pc is not None


def cached_tokens(pc: np.ndarray, n: int) -> np.ndarray:
    return pc[pc[CACHED]:pc[CACHED] + n].copy()


@njit_inline
def _home(key, i, mask):
    h = key * 0x7F4A7C159E3779B9 + i * 0x2545F4914F6CDD1D
    return (h ^ (h >> 29)) & mask


@njit
def _find(pc, i, key):
    """Slot of (instance i, block id key) in the table, or of the empty slot ending its probe."""
    tv, ek, kv = pc[TVAL], pc[EKEY], pc[pc[CONF]]
    mask = pc[pc[CONF] + 2] - 1
    h = _home(key, i, mask)
    while pc[tv + h] != NONE:
        e = pc[tv + h]
        if pc[ek + e] == key and e // kv == i:
            return h
        h = (h + 1) & mask
    return h


@njit
def _unlink(pc, i, e):
    pv, nx, lru = pc[EPREV], pc[ENEXT], pc[LRU]
    p, q = pc[pv + e], pc[nx + e]
    if p != NONE:
        pc[nx + p] = q
    else:
        pc[lru + 2 * i] = q
    if q != NONE:
        pc[pv + q] = p
    else:
        pc[lru + 2 * i + 1] = p
    pc[pv + e] = NONE
    pc[nx + e] = NONE
    pc[pc[EVICT] + i] -= 1


@njit
def _drop(pc, i, e):
    """Remove entry e (evictable) from instance i's cache: table (backward shift), pool."""
    tv, ek, kv = pc[TVAL], pc[EKEY], pc[pc[CONF]]
    mask = pc[pc[CONF] + 2] - 1
    pos = _find(pc, i, pc[ek + e])
    j = pos
    while True:
        j = (j + 1) & mask
        f = pc[tv + j]
        if f == NONE:
            break
        k = _home(pc[ek + f], f // kv, mask)
        if (pos < j and pos < k <= j) or (pos > j and (k > pos or k <= j)):
            continue  # its probe does not pass pos: it stays
        pc[tv + pos] = f
        pos = j
    pc[tv + pos] = NONE
    _unlink(pc, i, e)
    pc[pc[POOL] + i * kv + pc[pc[PTOP] + i]] = e
    pc[pc[PTOP] + i] += 1


@njit_inline
def hits(pc, i, r, inp, page):
    """Leading cached blocks of request r's prompt on instance i, and how many are evictable."""
    if pc is None:
        return 0, 0
    return _hits(pc, i, r, inp, page)


@njit
def _hits(pc, i, r, inp, page):
    off = pc[pc[BOFF] + r]
    usable = min((inp[r] - 1) // page, pc[pc[BOFF] + r + 1] - off)
    h = 0
    ev = 0
    while h < usable:
        e = pc[pc[TVAL] + _find(pc, i, pc[pc[BIDS] + off + h])]
        if e == NONE:
            break
        if pc[pc[EREF] + e] == 0:
            ev += 1
        h += 1
    return h, ev


@njit
def acquire(pc, i, r, h, free):
    """Request r (nothing computed yet) shares its first h prompt blocks, found by `hits`."""
    if pc is None:
        return
    off = pc[pc[BOFF] + r]
    for b in range(h):
        e = pc[pc[TVAL] + _find(pc, i, pc[pc[BIDS] + off + b])]
        if pc[pc[EREF] + e] == 0:
            _unlink(pc, i, e)
            free[i] -= 1
        pc[pc[EREF] + e] += 1
    pc[pc[NREG] + r] = h


@njit_inline
def take(pc, i, need, free):
    """Allocate `need` blocks (need <= free[i]): empty ones first, then evict cached LRU ones."""
    if pc is None:
        free[i] -= need
    elif need > 0:
        short = need - (free[i] - pc[pc[EVICT] + i])
        if short > 0:
            _evict(pc, i, short)
        free[i] -= need


@njit
def _evict(pc, i, k):
    for _ in range(k):
        _drop(pc, i, pc[pc[LRU] + 2 * i])


@njit_inline
def release(pc, i, r, blocks, free):
    """Request r gives back its blocks (completion or preemption): cached ones it alone
    referenced become evictable (appended last-first), its own ones free."""
    if pc is None:
        free[i] += blocks[r]
    else:
        n = pc[pc[NREG] + r]
        if n > 0:
            _unref(pc, i, r, n, free)
        free[i] += blocks[r] - n
    blocks[r] = 0


@njit
def _unref(pc, i, r, n, free):
    off, pv, nx, lru = pc[pc[BOFF] + r], pc[EPREV], pc[ENEXT], pc[LRU]
    for b in range(n - 1, -1, -1):
        e = pc[pc[TVAL] + _find(pc, i, pc[pc[BIDS] + off + b])]
        pc[pc[EREF] + e] -= 1
        if pc[pc[EREF] + e] == 0:
            t = pc[lru + 2 * i + 1]
            pc[pv + e] = t
            pc[nx + e] = NONE
            if t != NONE:
                pc[nx + t] = e
            else:
                pc[lru + 2 * i] = e
            pc[lru + 2 * i + 1] = e
            pc[pc[EVICT] + i] += 1
            free[i] += 1
    pc[pc[NREG] + r] = 0


@njit_inline
def register(pc, i, r, ctx, inp, page, free):
    """Request r's prompt blocks complete up to ctx[r] join the cache (or share an equal one)."""
    if pc is not None:
        _register(pc, i, r, ctx, inp, page, free)


@njit_inline
def note_cached(pc, r, h, page):
    """Request r's cached tokens at its first admission."""
    if pc is not None:
        if pc[pc[CACHED] + r] < 0:
            pc[pc[CACHED] + r] = h * page


@njit_inline
def used_blocks(pc, i, free, run, n_run, blocks):
    """Blocks in use on instance i (cached ones no request holds count as free)."""
    if pc is None:
        b = 0
        for j in range(n_run[i]):
            b += blocks[run[i, j]]
        return b
    return pc[pc[CONF]] - free[i]


@njit
def _register(pc, i, r, ctx, inp, page, free):
    off, kv = pc[pc[BOFF] + r], pc[pc[CONF]]
    full = min(min(ctx[r], inp[r]) // page, pc[pc[BOFF] + r + 1] - off)
    for b in range(pc[pc[NREG] + r], full):
        key = pc[pc[BIDS] + off + b]
        s = _find(pc, i, key)
        e = pc[pc[TVAL] + s]
        if e != NONE:  # cached meanwhile: share it, give back the own copy
            if pc[pc[EREF] + e] == 0:
                _unlink(pc, i, e)
                free[i] -= 1
            pc[pc[EREF] + e] += 1
            free[i] += 1
        else:
            pc[pc[PTOP] + i] -= 1
            e = pc[pc[POOL] + i * kv + pc[pc[PTOP] + i]]
            pc[pc[EKEY] + e] = key
            pc[pc[EREF] + e] = 1
            pc[pc[TVAL] + s] = e
        pc[pc[NREG] + r] += 1
