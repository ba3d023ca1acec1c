"""Sessions in the stream: request slots -> single requests, session starts and later turns.

The arrival kernels give each chunk's request slots in time order with their first-turn
lengths; `SessionExpander.process` asks the backend for each slot's role (thinned away, or a
session of T turns with an optional shared prompt), expands the later turns (keyed draws:
they do not depend on the chunking), keeps the rows that fall before the chunk's end and
carries the rest to later chunks. Every run first runs a look-back over the windows whose
sessions can still reach its first window (`SessionTables.lookback`, at most the longest
max_span): the windows before it, and before time 0 a stationary pre-history (window 0's
units repeated backwards, keyed as windows 2**20 − m), so the trace starts with sessions in
progress, as a log cut from a running service does, and every part generated alone
(`only=`) equals the same rows of the whole trace. Rows are ordered by (timestamp,
session_id, turn), a total order.

Session ids pack (window, client, slot): window < 2**20, client < 2**22, slot < 2**22.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..model.sessions import MAX_BLOCK_SIZE, T_PREFIX, SessionProfiles, load_profiles

SID_SLOT_BITS, SID_CLIENT_BITS, SID_WINDOW_BITS = 22, 22, 20
SESSION_COLUMNS = ("session_id", "turn", "think_time", "prefix_id")


def session_ids(client: np.ndarray, window: np.ndarray, k: np.ndarray) -> np.ndarray:
    """uint64 (window << 44) | (client << 22) | slot, unique in a trace; raises when a part overflows."""
    for name, a, bits in (("client id", client, SID_CLIENT_BITS), ("window index", window, SID_WINDOW_BITS),
                          ("requests of one client in one window", k, SID_SLOT_BITS)):
        if len(a) and int(a.max()) >= 1 << bits:
            raise ValueError(f"sessions: {name} reaches {int(a.max())}, above the session id's {bits}-bit field "
                             f"(< {1 << bits})")
    return ((window.astype(np.uint64) << np.uint64(SID_SLOT_BITS + SID_CLIENT_BITS))
            | (client.astype(np.uint64) << np.uint64(SID_SLOT_BITS)) | k.astype(np.uint64))


def prehistory_units(u, m: int, length0: float, max_window: int):
    """Window 0's units moved m windows before time 0, keyed as window 2**20 − m: the sessions
    of a stationary past, whose later turns reach into the trace's start."""
    key = (1 << SID_WINDOW_BITS) - m
    if key <= max_window:
        raise ValueError(f"sessions: the pre-history needs window keys above the pool's ({max_window})")
    return replace(u, window=np.full(len(u.window), key, np.uint32), start=u.start - m * length0)


def resolve(sessions, block_size: int, view) -> SessionProfiles | None:
    """Check the session arguments against the pool; None when sessions are off."""
    if sessions is None:
        return None
    if not isinstance(block_size, (int, np.integer)) or not 1 <= block_size < MAX_BLOCK_SIZE:
        raise ValueError(f"block_size (--block-size) must be a whole number in [1, {MAX_BLOCK_SIZE}), "
                         f"got {block_size!r}")
    profiles = sessions if isinstance(sessions, SessionProfiles) else load_profiles(sessions)
    profiles.check_pool(view.client_ids)
    if view.category == "multimodal" or "text_tokens" in view.fields:
        raise ValueError("sessions are not supported for multimodal pools (turns carry no image/audio/video items)")
    return profiles


class SessionExpander:
    """Per-chunk expansion with the carry of later turns (see the module docstring)."""

    def __init__(self, kern, view, profiles: SessionProfiles, seed: int, base: list):
        self.kern, self.view, self.seed, self.base = kern, view, np.uint64(seed), base
        self.tables = profiles.tables()
        self.fin, self.fout = base.index("input_tokens"), base.index("output_tokens")
        self.carry: dict | None = None

    def lookback_seconds(self) -> float:
        return self.tables.lookback(float(self.view.dists.values.max(initial=0.0)))

    def process(self, cols: dict, window: np.ndarray, k: np.ndarray, dist: np.ndarray, chunk_end: float) -> dict:
        """The chunk's rows with session columns, in order; later turns at or past `chunk_end` are carried."""
        T, d = self.tables, self.view.dists
        cid = cols["client_id"]
        vals = np.stack([np.asarray(cols[f], np.float64) for f in self.base], axis=1) if len(cid) else \
            np.zeros((0, len(self.base)))
        prof = T.profile_of(cid)
        window = window.astype(np.uint32)
        k = k.astype(np.uint64)
        turns, pid = self.kern.session_roles(self.seed, cid, window, k, prof, T.values, T.cdf, T.off, T.par)
        keep = turns > 0
        cid, window, k, prof, turns, pid, vals, dist = (a[keep] for a in (cid, window, k, prof, turns, pid, vals,
                                                                          dist))
        ts = cols["timestamp"][keep]
        sid = session_ids(cid, window, k)
        has = pid >= 0  # a session's first input holds its whole prompt: a shorter draw is raised to it
        if has.any():
            ptok = T.values[T.off[prof[has], T_PREFIX] + pid[has]]
            vals[has, self.fin] = np.maximum(vals[has, self.fin], ptok)
        later = np.maximum(turns - 1, 0)
        toff = np.zeros(len(turns) + 1, np.int64)
        np.cumsum(later, out=toff[1:])
        guide, goff = d.guide()
        e_ts, e_vals, e_think, e_turn = self.kern.expand_turns(
            self.seed, cid, window, k, prof, turns, ts, self.fin, self.fout, T.values, T.cdf, T.off, T.par,
            np.ascontiguousarray(dist), np.ascontiguousarray(vals), d.values, d.cdf, d.offsets, guide, goff, toff)
        rep = np.repeat(np.arange(len(turns)), later)
        made = e_turn >= 0  # turns past a session's max span are not made
        rep, e_ts, e_vals, e_think, e_turn = rep[made], e_ts[made], e_vals[made], e_think[made], e_turn[made]
        rows = _concat([self.carry,
                        _rows(ts, cid, sid, np.zeros(len(ts), np.int64), np.zeros(len(ts)), pid, vals, self.base),
                        _rows(e_ts, cid[rep], sid[rep], e_turn, e_think, pid[rep], e_vals, self.base)])
        now = rows["timestamp"] < chunk_end
        self.carry = {c: v[~now] for c, v in rows.items()}
        out = {c: v[now] for c, v in rows.items()}
        order = np.lexsort((out["turn"], out["session_id"], out["timestamp"]))
        return {c: v[order] for c, v in out.items()}


def _rows(ts, cid, sid, turn, think, pid, vals, base) -> dict:
    out = {"timestamp": ts, "client_id": cid.astype(np.uint32), "session_id": sid, "turn": turn.astype(np.int64),
           "think_time": think, "prefix_id": pid.astype(np.int64)}
    for f, name in enumerate(base):
        out[name] = vals[:, f]
    return out


def _concat(parts: list) -> dict:
    parts = [p for p in parts if p is not None]
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
