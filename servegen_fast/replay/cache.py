"""Prefix caching as replay sees it: an LRU of KV blocks, used both to *report* cached prompt
tokens (`servegen-fast serve` and the test server keep one over the prompts they receive) and to
*expect* them (the trace's block ids walked in release order through an LRU of the engine's KV
capacity).

A request's cached tokens are its leading full blocks found in the cache, times the block size,
at most (prompt − 1) tokens rounded down to a block (vLLM computes the last prompt token in any
case; only full blocks are cached). Then all its full prompt blocks are inserted or refreshed
(most recent last) and the least recently used beyond the capacity are dropped. Real engines
also cache output blocks and free blocks at completion, not at admission; a replayed turn's
next prompt holds the trace's keyed "output", not the model's, so output blocks never match.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

DEFAULT_BLOCK_SIZE = 16  # vLLM's default KV block size, the expectation's when a server does not say


class PrefixCache:
    """An LRU of block keys; `capacity` in blocks (None: unbounded)."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, capacity: int | None = None):
        if block_size < 1 or (capacity is not None and capacity < 0):
            raise ValueError(f"block size must be >= 1 and capacity >= 0, got {block_size}, {capacity}")
        self.block_size, self.capacity = int(block_size), capacity
        self._lru: OrderedDict = OrderedDict()

    def admit(self, keys, n_tokens: int) -> int:
        """A prompt of `n_tokens` whose full blocks have `keys` arrives: its cached tokens."""
        lru, bs = self._lru, self.block_size
        usable = max(int(n_tokens) - 1, 0) // bs
        hits = 0
        for k in keys[:usable]:
            if k not in lru:
                break
            hits += 1
        for k in keys:
            lru[k] = None
            lru.move_to_end(k)
        if self.capacity is not None:
            while len(lru) > self.capacity:
                lru.popitem(last=False)
        return hits * bs


def content_keys(tokens, block_size: int) -> list:
    """Keys of the full blocks of a prompt (token ids or words): each a hash of the previous
    key and the block's items, so equal keys mean equal prefixes."""
    keys, prev = [], 0
    for b in range(len(tokens) // block_size):
        prev = hash((prev, tuple(tokens[b * block_size:(b + 1) * block_size])))
        keys.append(prev)
    return keys


def expected_cached(plan, order: np.ndarray, block_size: int, capacity_tokens: int | None) -> np.ndarray:
    """Expected cached tokens of the requests at plan positions `order` (their release order):
    block ids of the served prompts at the engine's block size (io/blocks.py, the trace's
    keyed ids) through a PrefixCache of the engine's KV capacity. -1 for requests not in `order`."""
    import pyarrow as pa

    from ..io.blocks import BlockSpec, hash_ids

    spec = BlockSpec(plan.block_spec.seed, int(block_size), plan.block_spec.profiles)
    inp = plan.input_tokens.astype(np.int64)
    batch = pa.table({"session_id": pa.array(plan.session_id, pa.uint64()),
                      "client_id": pa.array(plan.client_id, pa.uint32()),
                      "prefix_id": pa.array(np.where(plan.prefix_id < 0, 0, plan.prefix_id), pa.int64(),
                                            mask=plan.prefix_id < 0),
                      "input_tokens": pa.array(inp, pa.int64())})
    ids = hash_ids(batch, spec)
    off, vals = ids.offsets.to_numpy(), ids.values.to_numpy()
    cap = None if capacity_tokens is None else int(capacity_tokens) // int(block_size)
    cache = PrefixCache(block_size, cap)
    out = np.full(len(plan), -1, np.int64)
    for i in np.asarray(order, np.int64).tolist():
        full = int(inp[i]) // block_size
        out[i] = cache.admit(vals[off[i]:off[i] + full].tolist(), int(inp[i]))
    return out
