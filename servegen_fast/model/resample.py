"""A pool shorter than a day generated past its end: whole windows resampled, fresh randomness.

`extend_horizon` (population.py) repeats a pool of whole days or weeks; a pool fitted to a
short log (an hour, say) has no period to repeat, and repeating its windows in order would
replay the log's exact rate series. `resample_windows` keeps the pool's own windows, then
fills the time past its end with whole windows, each a copy of one of the pool's full-length
windows (every client's parameters of that window together, so clients keep their joint
behaviour): consecutive blocks of as many new windows as there are full-length source windows
each take the source windows in a keyed random order (sampling without replacement, a
permutation per block drawn from (seed, window)), so the extension has the log's distribution
of window rates exactly, in a new order. The new windows get new window
indices past the pool's, so their arrivals, lengths and intra-window modulation
(kernels/modulation.py) are fresh draws: the extension has the log's distribution of window
rates and burstiness, not its sequence.
"""
from __future__ import annotations

import numpy as np

from ..kernels import philox as px
from .pool import ClientPool

_RESAMPLE_CLIENT = 0xFFFFFFFE  # client word of the window draws: never a real client id
_RESAMPLE_PARAM = 7            # index word (population.py uses 0..6 for its own draws)


def resample_windows(pool: ClientPool, duration: int, seed: int = 0) -> ClientPool:
    """`pool` over [0, duration): its own windows, then resampled whole windows (see above)."""
    duration = int(duration)
    if duration <= pool.duration:
        return pool.span(0, duration)
    ws = pool.window_size
    full = np.flatnonzero(pool.window_len == ws)
    source = full if len(full) else np.arange(pool.n_windows)
    n_new = -(-(duration - pool.duration) // ws)
    new_index = int(pool.window_index.max()) + 1 + np.arange(n_new, dtype=np.int64)
    blocks = -(-n_new // len(source))
    u = px.uniform_np(np.uint64(seed), np.uint64(_RESAMPLE_CLIENT),
                      int(pool.window_index.max()) + 1 + np.arange(blocks * len(source), dtype=np.uint64),
                      px.FIELD_POPULATION, np.uint64(_RESAMPLE_PARAM))
    order = np.argsort(u.reshape(blocks, len(source)), axis=1, kind="stable")  # a keyed permutation per block
    pick = source[order.reshape(-1)[:n_new]]
    start = pool.duration + np.arange(n_new, dtype=np.int64) * ws
    length = np.minimum(start + ws, duration) - start
    cols = np.concatenate([np.arange(pool.n_windows), pick])

    def cat(a):
        return None if a is None else a[:, cols]

    return pool.replace(window_start=np.concatenate([pool.window_start, start]),
                        window_len=np.concatenate([pool.window_len, length]),
                        window_index=np.concatenate([pool.window_index, new_index]),
                        length_index=pool.length_index[cols], rate=cat(pool.rate), cv=cat(pool.cv),
                        law=cat(pool.law), shape=cat(pool.shape), scale=cat(pool.scale), present=cat(pool.present),
                        mod_sigma=cat(pool.mod_sigma), mod_tau=cat(pool.mod_tau))
