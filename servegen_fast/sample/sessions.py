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

Stream versions (`session_stream` in a trace's metadata; absent: 1, so older traces regenerate
with their own bytes): 1 draws request slots at the client's rate and thins each to a session
start with probability 1 / E[turns]; 2 (the default) draws the session starts directly at
rate / E[turns] (`start_rates`), so no slot is drawn to be thrown away, and its pre-history
draws only the sessions of 2+ turns (at rate × P(turns > 1) / E[turns], turns from the
table conditioned on > 1: `SessionTables.multi_turn_only`), as a single request before time 0
leaves nothing in the trace. Both keep the request rate; the role and turn draws are the
same keyed draws (with 2 every slot is kept).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..kernels import rows as R
from ..model.sessions import MAX_BLOCK_SIZE, P_KEEP, T_PREFIX, SessionProfiles, load_profiles

SID_SLOT_BITS, SID_CLIENT_BITS, SID_WINDOW_BITS = 22, 22, 20
SESSION_COLUMNS = ("session_id", "turn", "think_time", "prefix_id")
SESSION_STREAMS = (1, 2)
SESSION_STREAM = 2  # new traces; 1 reproduces the traces made before versions


def check_id_fields(client: np.ndarray, window: np.ndarray, k: np.ndarray) -> None:
    """Raise when a part of the session id (window << 44) | (client << 22) | slot would overflow."""
    for name, a, bits in (("client id", client, SID_CLIENT_BITS), ("window index", window, SID_WINDOW_BITS),
                          ("requests of one client in one window", k, SID_SLOT_BITS)):
        if len(a) and int(a.max()) >= 1 << bits:
            raise ValueError(f"sessions: {name} reaches {int(a.max())}, above the session id's {bits}-bit field "
                             f"(< {1 << bits})")


def prehistory_units(u, m: int, length0: float, max_window: int):
    """Window 0's units moved m windows before time 0, keyed as window 2**20 − m: the sessions
    of a stationary past, whose later turns reach into the trace's start."""
    key = (1 << SID_WINDOW_BITS) - m
    if key <= max_window:
        raise ValueError(f"sessions: the pre-history needs window keys above the pool's ({max_window})")
    return replace(u, window=np.full(len(u.window), key, np.uint32), start=u.start - m * length0)


def resolve(sessions, block_size: int, view, stream: int = SESSION_STREAM) -> SessionProfiles | None:
    """Check the session arguments against the pool; None when sessions are off."""
    if stream not in SESSION_STREAMS:
        raise ValueError(f"session_stream (--session-stream) must be one of {list(SESSION_STREAMS)}, got {stream!r}")
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

    def __init__(self, kern, view, profiles: SessionProfiles, seed: int, base: list, stream: int = SESSION_STREAM):
        self.kern, self.view, self.seed, self.base, self.stream = kern, view, np.uint64(seed), base, stream
        self.tables = profiles.tables()
        self.par = self.tables.par
        self.pre_tables = self.tables  # the pre-history's
        if stream >= 2:  # slots are session starts already (start_rates): none is thinned
            self.par = self.par.copy()
            self.par[:, P_KEEP] = 1.0
            self.pre_tables = self.tables.multi_turn_only()
        self.fin, self.fout = base.index("input_tokens"), base.index("output_tokens")
        self.carry: dict | None = None

    def start_rates(self, client: np.ndarray, rate: np.ndarray, prehistory: bool = False) -> np.ndarray:
        """The rates of the request slots of units (client, rate): stream 1 the clients' rates,
        stream 2 their session starts' (rate × the keep probability 1 / E[turns]; in the
        pre-history, of the multi-turn starts only)."""
        if self.stream < 2:
            return rate
        T = self.pre_tables if prehistory else self.tables
        p = T.profile_of(client)
        return np.where(p >= 0, rate * T.par[np.maximum(p, 0), P_KEEP], rate)

    def lookback_seconds(self) -> float:
        return self.tables.lookback(float(self.view.dists.values.max(initial=0.0)))

    def process(self, cols: dict, window: np.ndarray, k: np.ndarray, dist: tuple, chunk_end: float,
                emit: bool = True, prehistory: bool = False) -> dict | None:
        """The chunk's rows with session columns, in order; later turns at or past `chunk_end` are
        carried. `dist` = (each slot's unit, the units' base-field distribution ids). The kept
        slots (first turns) are already in time order; only the later turns are
        sorted, then merged in (kernels/rows.py). `prehistory`: a window before time 0."""
        T = self.pre_tables if prehistory else self.tables
        cid = cols["client_id"]
        prof = T.profile_of(cid)
        window = window.astype(np.uint32, copy=False)
        k = k.astype(np.uint64, copy=False)
        turns, pid = self.kern.session_roles(self.seed, cid, window, k, prof, T.values, T.cdf, T.guide, T.off, self.par)
        kept = np.flatnonzero(turns > 0)
        check_id_fields(cid, window, k)
        base = {f: np.asarray(cols[f], np.float64) for f in self.base}
        # session ids; a session's first input holds its whole prompt: a shorter draw is raised to it
        sid = R.first_turns(kept, cid, window, k, prof, pid, np.ascontiguousarray(T.off[:, T_PREFIX]), T.values,
                            base["input_tokens"], SID_SLOT_BITS, SID_CLIENT_BITS)
        later = self._later_turns(cols["timestamp"], cid, base, kept, sid, turns, pid, window, k, prof, dist)
        rows = _merge(self.carry, later, _sort_order(later))  # the carry is kept sorted too
        if rows is None:
            rows = {c: np.zeros(0, d) for c, d in (("timestamp", np.float64), ("client_id", np.uint32),
                                                   ("session_id", np.uint64), ("prefix_id", np.int64),
                                                   ("turn", np.int64), ("think_time", np.float64),
                                                   *((f, np.float64) for f in self.base))}
        cut = int(np.searchsorted(rows["timestamp"], chunk_end, side="left"))
        self.carry = {c: v[cut:] for c, v in rows.items()}
        rows = {c: v[:cut] for c, v in rows.items()}
        if not emit:
            return None
        kept, sid = _order_first(cols["timestamp"], kept, sid)
        pos_a, pos_b = R.merge_sorted(cols["timestamp"][kept], sid, np.zeros(len(kept), np.int64), rows["timestamp"],
                                      rows["session_id"], rows["turn"])
        n = len(pos_a) + len(pos_b)
        out = {}
        for c, src in (("timestamp", cols["timestamp"]), ("client_id", cid), ("prefix_id", pid), *base.items()):
            b = rows[c].astype(src.dtype, copy=False)
            out[c] = R.place_indexed(np.empty(n, src.dtype), pos_a, src, kept, pos_b, b)
        out["session_id"] = R.place_direct(np.empty(n, np.uint64), pos_a, sid, pos_b, rows["session_id"])
        for c, dt in (("turn", np.int64), ("think_time", np.float64)):
            b = rows[c].astype(dt, copy=False)
            out[c] = R.place_direct(np.empty(n, dt), pos_a, np.zeros(len(kept), dt), pos_b, b)
        return out

    def _later_turns(self, ts, cid_all, base, kept, sid, turns, pid, window, k, prof, dist) -> dict | None:
        """Rows of turns 2, 3, ... of the multi-turn sessions started by the kept slots."""
        T, d = self.tables, self.view.dists
        multi = np.flatnonzero(turns[kept] > 1)
        if len(multi) == 0:
            return None
        src = kept[multi]
        vals = np.stack([base[f][src] for f in self.base], axis=1)
        later = turns[src] - 1
        toff = np.zeros(len(src) + 1, np.int64)
        np.cumsum(later, out=toff[1:])
        guide, goff = d.guide()
        cid = cid_all[src]
        e_ts, e_vals, e_think, e_turn = self.kern.expand_turns(
            self.seed, cid, window[src], k[src], prof[src], turns[src], ts[src], self.fin, self.fout, T.values,
            T.cdf, T.guide, T.off, self.par, np.ascontiguousarray(dist[1][dist[0][src]]), vals, d.values, d.cdf,
            d.offsets, guide, goff, toff)
        rep = np.repeat(np.arange(len(src)), later)
        if (e_turn < 0).any():  # turns past a session's max span are not made
            made = np.flatnonzero(e_turn >= 0)
            rep, e_ts, e_vals, e_turn, e_think = rep[made], e_ts[made], e_vals[made], e_turn[made], e_think[made]
        out = {"timestamp": e_ts, "client_id": cid[rep], "session_id": sid[multi][rep], "prefix_id": pid[src][rep]}
        for f, name in enumerate(self.base):
            out[name] = e_vals[:, f]
        out["turn"], out["think_time"] = e_turn, e_think
        return out


def _order_first(ts: np.ndarray, kept: np.ndarray, sid: np.ndarray):
    """First turns come in (time, slot) order; equal times (rare) are put in session-id order."""
    t = ts[kept]
    eq = np.flatnonzero(t[1:] == t[:-1]) if len(t) > 1 else np.zeros(0, np.int64)
    if len(eq) == 0:
        return kept, sid
    pos = _tied_rows(eq, len(t))  # the rows of tied runs (contiguous: t is sorted)
    sub = pos[np.lexsort((sid[pos], t[pos]))]
    kept, sid = kept.copy(), sid.copy()
    kept[pos], sid[pos] = kept[sub], sid[sub]
    return kept, sid


def _tied_rows(eq: np.ndarray, n: int) -> np.ndarray:
    """Sorted positions i and i + 1 for each i in eq (np.union1d's result, without its sort)."""
    mark = np.zeros(n, bool)
    mark[eq] = True
    mark[eq + 1] = True
    return np.flatnonzero(mark)


def _sort_order(rows: dict | None) -> np.ndarray | None:
    """The permutation putting rows in (timestamp, session_id, turn) order: a sort by time, ties
    (rare) by the rest."""
    if rows is None:
        return None
    t = rows["timestamp"]
    order = np.argsort(t)  # not stable: tied runs are put in order below
    ts = t[order]
    eq = np.flatnonzero(ts[1:] == ts[:-1]) if len(ts) > 1 else np.zeros(0, np.int64)
    if len(eq):
        pos = _tied_rows(eq, len(ts))
        sub = order[pos]
        order[pos] = sub[np.lexsort((rows["turn"][sub], rows["session_id"][sub], t[sub]))]
    return order


def _merge(a: dict | None, b: dict | None, b_order: np.ndarray | None) -> dict | None:
    """Rows a (sorted by (timestamp, session_id, turn)) and rows b taken in `b_order` (sorted by
    the same key), merged in that order."""
    if b is None or len(b["timestamp"]) == 0:
        return a
    if a is None or len(a["timestamp"]) == 0:
        return {c: v[b_order] for c, v in b.items()}
    pos_a, pos_b = R.merge_sorted(a["timestamp"], a["session_id"], a["turn"], b["timestamp"][b_order],
                                  b["session_id"][b_order], b["turn"][b_order])
    n = len(pos_a) + len(pos_b)
    return {c: R.place_indexed(np.empty(n, v.dtype), pos_b, b[c].astype(v.dtype, copy=False), b_order, pos_a, v)
            for c, v in a.items()}
