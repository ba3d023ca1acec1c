"""Sessions and shared prompts inferred from KV block ids, and a session profile fitted to them
(docs/sessions.md states every rule used here).

Logs without block ids but with a session-id column (BurstGPT's `Session ID`) give sessions
directly (`structure_from_session_ids`; no prompts). Block ids name prefix chains (Mooncake's
`hash_ids`; our traces' derived ids): a request's
leading blocks that some earlier request also had are a prefix it shares. For request i:

* shared depth j: its leading blocks seen in earlier requests;
* candidate parent p: the latest earlier request holding its j-th block.
* i is the next turn of p's session when j >= 1, j equals p's full input blocks
  (floor(input_p / block size): i's input extends p's whole input), j is deeper than the
  prompt p's session started from, and p has no next turn yet. Otherwise i starts a session,
  from the prompt of depth j (its j shared blocks), or from none when j = 0.

Fitted profile: session_share = requests in sessions of 2+ turns / requests; turns = the
sizes of those sessions; think time = gap to the previous turn minus the service estimate
(ttft + tpot × previous output), floored at 0; new tokens = input − previous input −
previous output, floored at 0; prompts: every prompt node with its depth × block size tokens
and its popularity (sessions starting from it, plus the request that first held it), the
heaviest `max_prefixes`; prefix_share = sessions with a prompt / sessions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.sources import RequestLog
from ..model.sessions import DEFAULT_TPOT, DEFAULT_TTFT, SessionProfile, SessionProfiles

MAX_POINTS = 256


@dataclass
class SessionStructure:
    parent: np.ndarray      # int64[n] previous turn (-1: starts a session)
    session: np.ndarray     # int64[n] session index, numbered by start
    turn: np.ndarray        # int64[n] 0 for a session's first request
    shared: np.ndarray      # int64[n] leading blocks shared with earlier requests
    prompt: np.ndarray      # int64[n] the session's prompt index (-1: none)
    prompt_blocks: np.ndarray  # int64[P]
    prompt_uses: np.ndarray    # int64[P]
    block_size: int

    @property
    def n_sessions(self) -> int:
        return int(self.session.max(initial=-1)) + 1


def _require_blocks(log: RequestLog) -> None:
    if log.blocks is None:
        raise ValueError(f"{log.report.path}: the log has no KV block ids (Mooncake hash_ids, or a trace made "
                         "with --sessions); sessions cannot be inferred")


def infer_sessions(log: RequestLog) -> SessionStructure:
    """Sessions, turns and shared prompts of a log with block ids (rules in the module docstring)."""
    _require_blocks(log)
    bs = int(log.block_size)
    off = log.blocks.offsets.to_numpy().astype(np.int64)
    ids = log.blocks.values.to_numpy().astype(np.int64)
    n = len(log)
    nb = np.diff(off)
    row = np.repeat(np.arange(n), nb)
    pos = np.arange(len(ids)) - off[row]
    order = np.lexsort((row, ids))  # by id, then row: the previous entry is the latest earlier holder
    prev = np.full(len(ids), -1, np.int64)
    same = ids[order][1:] == ids[order][:-1]
    prev[order[1:]] = np.where(same, row[order][:-1], -1)
    seen = (prev >= 0) & (prev < row)
    first_unseen = np.where(seen, nb[row], pos)
    shared = np.full(n, 0, np.int64)
    has = nb > 0
    shared[has] = np.minimum.reduceat(first_unseen, off[:-1][has])
    cand = np.where(shared > 0, prev[np.minimum(off[:-1] + shared - 1, max(len(ids) - 1, 0))], -1)
    full_in = log.input_tokens.astype(np.int64) // bs
    parent = np.full(n, -1, np.int64)
    session = np.empty(n, np.int64)
    turn = np.zeros(n, np.int64)
    depth = np.zeros(n, np.int64)      # prompt depth of each request's session
    has_child = np.zeros(n, bool)
    key = np.full(n, -1, np.int64)     # the prompt node's block id
    n_sessions = 0
    for i in range(n):  # sequential: a session's prompt depth and its last turn are needed
        j, p = int(shared[i]), int(cand[i])
        if p >= 0 and j == full_in[p] and j > depth[p] and not has_child[p]:
            parent[i], session[i], turn[i], depth[i] = p, session[p], turn[p] + 1, depth[p]
            key[i] = key[p]
            has_child[p] = True
            continue
        session[i], depth[i] = n_sessions, j
        n_sessions += 1
        if j > 0:
            key[i] = ids[off[i] + j - 1]
    starts = parent < 0
    keys, inv, uses = np.unique(key[starts & (key >= 0)], return_inverse=True, return_counts=True)
    prompt = np.full(n, -1, np.int64)
    sp = np.flatnonzero(starts & (key >= 0))
    prompt[sp] = inv
    prompt = np.where(starts, prompt, -1)
    for i in np.flatnonzero(~starts):  # turns inherit their session's prompt (parents come first)
        prompt[i] = prompt[parent[i]]
    depth_of = np.zeros(len(keys), np.int64)
    depth_of[inv] = depth[sp]
    return SessionStructure(parent, session, turn, shared, prompt, depth_of, uses + 1, bs)


SESSION_ID_COLUMNS = ("Session ID", "session_id")  # BurstGPT v1.2+/v3; our traces


def structure_from_session_ids(log: RequestLog, column: str) -> SessionStructure:
    """Sessions named by a column (BurstGPT's `Session ID`): each request's previous turn is the
    session's previous request; a blank id is a single request. No block ids: no prompts."""
    key = np.asarray(log.columns[column]).astype(str)
    n = len(key)
    blank = np.char.str_len(np.char.strip(key)) == 0
    _, code = np.unique(key, return_inverse=True)
    code = np.where(blank, -1 - np.arange(n), code)  # every blank its own session
    order = np.lexsort((np.arange(n), code))
    parent = np.full(n, -1, np.int64)
    same = code[order][1:] == code[order][:-1]
    parent[order[1:][same]] = order[:-1][same]
    turn = np.zeros(n, np.int64)
    session = np.empty(n, np.int64)
    n_sessions = 0
    for i in range(n):  # in time order: a parent comes first
        p = parent[i]
        if p >= 0:
            session[i], turn[i] = session[p], turn[p] + 1
        else:
            session[i] = n_sessions
            n_sessions += 1
    none = np.zeros(0, np.int64)
    return SessionStructure(parent, session, turn, np.zeros(n, np.int64), np.full(n, -1, np.int64), none, none,
                            int(log.block_size or 0))


def session_structure(log: RequestLog) -> SessionStructure:
    """From block ids when the log has them, else from a session-id column."""
    if log.blocks is not None:
        return infer_sessions(log)
    for c in SESSION_ID_COLUMNS:
        if c in log.columns:
            return structure_from_session_ids(log, c)
    raise ValueError(f"{log.report.path}: the log has no KV block ids (Mooncake hash_ids, or a trace made with "
                     f"--sessions) and no session-id column ({', '.join(SESSION_ID_COLUMNS)}); sessions cannot be "
                     "inferred")


def _table(v: np.ndarray) -> dict:
    """Exact pmf with at most MAX_POINTS values, else MAX_POINTS equally weighted order statistics."""
    v = np.sort(np.asarray(v, np.float64))
    if len(np.unique(v)) > MAX_POINTS:
        v = v[np.round(np.linspace(0, len(v) - 1, MAX_POINTS)).astype(np.int64)]
    vals, counts = np.unique(v, return_counts=True)
    return {"values": vals.tolist(), "probs": (counts / counts.sum()).tolist()}


def profile_for(log: RequestLog, st: SessionStructure, rows: np.ndarray, *, ttft=DEFAULT_TTFT, tpot=DEFAULT_TPOT,
                max_prefixes: int = 4096) -> tuple[SessionProfile | None, dict]:
    """A profile of the requests `rows` (bool mask) and what it was made from."""
    sess = st.session[rows]
    _, size = np.unique(sess, return_counts=True)
    cont = rows & (st.parent >= 0)
    p = st.parent[cont]
    gap = log.timestamp[cont] - log.timestamp[p]
    think = gap - (ttft + tpot * log.output_tokens[p])
    new = log.input_tokens[cont].astype(np.int64) - log.input_tokens[p] - log.output_tokens[p]
    starts = rows & (st.parent < 0)
    pr = st.prompt[starts]
    info = {"requests": int(rows.sum()), "sessions": int(len(size)), "multi_turn_sessions": int((size > 1).sum()),
            "later_turns": int(cont.sum()), "think_floored": int((think < 0).sum()),
            "new_floored": int((new < 0).sum()),
            "sessions_with_prompt": int((pr >= 0).sum())}
    if info["later_turns"] == 0:
        return None, info
    uses = np.bincount(pr[pr >= 0], minlength=len(st.prompt_blocks)) + np.isin(
        np.arange(len(st.prompt_blocks)), pr[pr >= 0])  # + the request that first held it
    top = np.argsort(-uses, kind="stable")[:max_prefixes]
    top = top[uses[top] > 0]
    info["prompts"] = int(len(top))
    d = {"session_share": float(size[size > 1].sum() / size.sum()), "turns": _table(size[size > 1]),
         "think_time": _table(np.maximum(think, 0.0)), "new_tokens": _table(np.maximum(new, 0)),
         "prefix_share": float((pr >= 0).mean()) if len(top) else 0.0,
         "prefixes": {"tokens": (st.prompt_blocks[top] * st.block_size).tolist(), "weights": uses[top].tolist()},
         "service": {"ttft": ttft, "tpot": tpot}}
    return SessionProfile.from_dict(d, "fitted profile"), info


def fit_sessions(log: RequestLog, client_index: np.ndarray | None = None, client_ids=None,
                 structure: SessionStructure | None = None, **kw) -> tuple[SessionProfiles, dict]:
    """Profiles of a log with block ids: the whole log's as the default, and per client (pool
    client id -> profile) for clients with later turns when `client_index` (row -> client) is given."""
    st = structure or session_structure(log)
    everything = np.ones(len(log), bool)
    default, info = profile_for(log, st, everything, **kw)
    out = SessionProfiles(default, {}, f"fit:{log.report.path}")
    report = {"whole log": info, "clients": {}}
    if client_index is not None and client_ids is not None and len(client_ids) > 1:
        for c, cid in enumerate(client_ids):
            prof, cinfo = profile_for(log, st, client_index == c, **kw)
            report["clients"][int(cid)] = cinfo
            if prof is not None:
                out.clients[int(cid)] = prof
    if out.default is None and not out.clients:
        raise ValueError(f"{log.report.path}: no request continues an earlier one; no sessions to fit")
    return out, report


def warmup_seconds(log: RequestLog, st: SessionStructure) -> float:
    """How long after the log's start a session start may still be a turn of a session begun
    before the log: the 90th percentile of the multi-turn sessions' spans (first to last
    turn), at most half the log."""
    ends = np.full(st.n_sessions, -np.inf)
    begins = np.full(st.n_sessions, np.inf)
    np.maximum.at(ends, st.session, log.timestamp)
    np.minimum.at(begins, st.session, log.timestamp)
    spans = (ends - begins)[ends > begins]
    return float(min(np.percentile(spans, 90), log.span / 2)) if len(spans) else 0.0


def first_turns(log: RequestLog, st: SessionStructure) -> np.ndarray:
    """Bool mask of the session starts whose inputs the pool's input distribution is fitted to:
    those after the warm-up (`warmup_seconds`), since earlier ones include turns of sessions
    in progress when the log began, with their long contexts (the generator makes those
    itself, from its pre-history)."""
    starts = st.parent < 0
    late = starts & (log.timestamp >= warmup_seconds(log, st))
    return late if late.sum() >= max(20, starts.sum() // 4) else starts
