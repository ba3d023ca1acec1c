"""KV block ids of a trace with sessions, derived on read (docs/trace-schema.md).

Ids are not stored: they are a keyed hash of (seed, session_id, block index) for a session's
full blocks, (seed, client, prefix_id, block index) for blocks inside a shared prompt, and
(seed, session_id, block index, tokens) for the last partial block
(kernels/session_bodies.py). Everything they need is in the row (session_id, client_id,
prefix_id, input_tokens) and the trace's metadata (seed, block size, the session profile for
prompt lengths), so every reader and exporter gets the same ids from this one function.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..model.sessions import T_PREFIX, SessionProfiles, load_profiles

HASH_IDS = "hash_ids"


class BlockSpec:
    """What block ids of a trace need besides its rows: the seed, block size and profiles."""

    def __init__(self, seed: int, block_size: int, profiles: SessionProfiles | dict):
        if not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size must be a positive whole number, got {block_size!r}")
        self.seed, self.block_size = int(seed), int(block_size)
        self.profiles = profiles if isinstance(profiles, SessionProfiles) else load_profiles(profiles)
        self.tables = self.profiles.tables()

    @classmethod
    def from_metadata(cls, meta: dict, origin: str = "the trace") -> "BlockSpec":
        s = meta.get("sessions")
        if not s:
            raise ValueError(f"{origin} has no sessions (generate with --sessions to get block ids)")
        return cls(meta["seed"], s["block_size"], s["profiles"])

    def prefix_tokens(self, client: np.ndarray, prefix_id: np.ndarray) -> np.ndarray:
        """Tokens of each row's shared prompt (0 where none)."""
        T = self.tables
        p = T.profile_of(client)
        has = (prefix_id >= 0) & (p >= 0)
        out = np.zeros(len(client), np.int64)
        out[has] = T.values[T.off[p[has], T_PREFIX] + prefix_id[has]].astype(np.int64)
        return out


def _columns(batch) -> tuple:
    pid = batch.column("prefix_id")
    pid_np = pid.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pid.null_count:
        pid_np[pid.is_null().to_numpy(zero_copy_only=False)] = -1
    col = lambda n: batch.column(n).to_numpy(zero_copy_only=False)  # noqa: E731
    return col("session_id").astype(np.uint64), col("client_id").astype(np.uint32), pid_np, \
        col("input_tokens").astype(np.int64)


def block_offsets(input_tokens: np.ndarray, block_size: int) -> np.ndarray:
    n = (np.asarray(input_tokens, np.int64) + block_size - 1) // block_size
    off = np.zeros(len(n) + 1, np.int64)
    np.cumsum(n, out=off[1:])
    return off


def hash_ids(batch: pa.RecordBatch | pa.Table, spec: BlockSpec, backend: str = "cpu",
             input_tokens: np.ndarray | None = None) -> pa.ListArray:
    """list<int64> of block ids per row (ceil(input_tokens / block size) each); `input_tokens`
    replaces the rows' own lengths (replay: the served lengths)."""
    if backend == "numpy":
        from ..kernels import reference as kern
    else:
        from ..kernels import cpu as kern
    sid, client, pid, inp = _columns(batch)
    if input_tokens is not None:
        inp = np.asarray(input_tokens, np.int64)
    off = block_offsets(inp, spec.block_size)
    ptok = spec.prefix_tokens(client, pid)
    ids = kern.fill_block_ids(np.uint64(spec.seed), sid, client, pid, ptok, inp, np.int64(spec.block_size), off)
    if off[-1] < 2 ** 31:
        return pa.ListArray.from_arrays(pa.array(off.astype(np.int32), pa.int32()), pa.array(ids, pa.int64()))
    return pa.LargeListArray.from_arrays(pa.array(off, pa.int64()), pa.array(ids, pa.int64()))


def content_ids(batch: pa.RecordBatch | pa.Table, spec: BlockSpec) -> pa.ListArray:
    """Per row, the id each of its blocks has once full: `hash_ids` with the partial last block
    taken as full. A prompt's content is keyed by these (io/content.py), so the tokens of a
    turn's partial last block are the same as the next turn's, where that block is longer:
    turn k+1's prompt starts with turn k's whole prompt."""
    inp = _columns(batch)[3]
    bs = spec.block_size
    return hash_ids(batch, spec, input_tokens=(inp + bs - 1) // bs * bs)
