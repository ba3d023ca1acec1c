"""Prefix-cache and session statistics of a log or trace with KV block ids (docs/sessions.md).

* Block hit ratio of an infinite cache: the share of block accesses (every block of every
  request's input, in request order) whose block was accessed before.
* LRU hit ratio at each size C (blocks) of a sweep: the share of accesses with LRU stack
  distance below C (kernels/cache.py), one pass for all sizes.
* Sessions as `characterize/sessions.py` infers them from block-id prefix chains (the same
  rules for a generated trace and a real log, so they compare like with like): turns per
  session, inter-turn gaps (arrival to arrival), context growth (input − previous input).
"""
from __future__ import annotations

import numpy as np

from ..io.sources import RequestLog
from ..kernels.cache import stack_distances
from .sessions import infer_sessions

LRU_SIZES = tuple(4 ** k for k in range(4, 11))  # 256 .. 1,048,576 blocks


def block_hits(log: RequestLog, sizes=LRU_SIZES) -> dict:
    ids = log.blocks.values.to_numpy().astype(np.int64)
    d = stack_distances(ids) if len(ids) else np.zeros(0, np.int64)
    n = max(len(ids), 1)
    return {"block_size": log.block_size, "blocks": int(len(ids)), "hit_ratio_infinite": float((d >= 0).sum() / n),
            "hit_ratio_lru": {str(int(c)): float(((d >= 0) & (d < c)).sum() / n) for c in sizes}}


def session_samples(log: RequestLog) -> dict:
    """Per-session turn counts, inter-turn gaps and context growth of the inferred sessions."""
    st = infer_sessions(log)
    _, turns = np.unique(st.session, return_counts=True)
    cont = np.flatnonzero(st.parent >= 0)
    p = st.parent[cont]
    return {"turns": turns, "gaps": log.timestamp[cont] - log.timestamp[p],
            "growth": log.input_tokens[cont].astype(np.int64) - log.input_tokens[p],
            "prompts": len(st.prompt_blocks)}


def _pct(v) -> dict:
    if len(v) == 0:
        return {}
    q = np.percentile(v, (50, 90, 99))
    return {"mean": float(np.mean(v)), **{f"p{p}": float(x) for p, x in zip((50, 90, 99), q)}}


def summarize_sessions(log: RequestLog, sizes=LRU_SIZES) -> dict:
    s = session_samples(log)
    multi = s["turns"][s["turns"] > 1]
    return {**block_hits(log, sizes), "sessions": int(len(s["turns"])), "multi_turn_sessions": int(len(multi)),
            "share_in_multi_turn": float(multi.sum() / max(s["turns"].sum(), 1)), "prompts": s["prompts"],
            "turns_per_session": _pct(s["turns"]), "inter_turn_gap_s": _pct(s["gaps"]),
            "context_growth": _pct(s["growth"])}


def compare_sessions(trace: RequestLog, reference: RequestLog, ks_2samp, sizes=LRU_SIZES) -> dict:
    """Differences of the hit ratios and KS distances (`ks_2samp(x, y)`) of the session samples."""
    a, b = block_hits(trace, sizes), block_hits(reference, sizes)
    sa, sb = session_samples(trace), session_samples(reference)
    lru = {c: a["hit_ratio_lru"][c] - b["hit_ratio_lru"][c] for c in a["hit_ratio_lru"]}
    return {"hit_ratio_infinite_difference": a["hit_ratio_infinite"] - b["hit_ratio_infinite"],
            "hit_ratio_lru_difference": lru, "hit_ratio_lru_max_abs_difference": max(abs(v) for v in lru.values()),
            "ks_turns_per_session": ks_2samp(sa["turns"], sb["turns"]),
            "ks_inter_turn_gap": ks_2samp(sa["gaps"], sb["gaps"]),
            "ks_context_growth": ks_2samp(sa["growth"], sb["growth"])}


def format_rows(s: dict) -> list[tuple[str, object]]:
    rows = [("block hit ratio, infinite", s["hit_ratio_infinite"])]
    rows += [(f"block hit ratio, LRU {int(c):,}", v) for c, v in s["hit_ratio_lru"].items()]
    rows += [("sessions", s["sessions"]), ("share in multi-turn sessions", s["share_in_multi_turn"])]
    for key, label in (("turns_per_session", "turns/session"), ("inter_turn_gap_s", "inter-turn gap (s)"),
                       ("context_growth", "context growth")):
        rows += [(f"{label} {k}", v) for k, v in s[key].items()]
    return rows
