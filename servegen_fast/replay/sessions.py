"""Per-session results of a replay with sessions, and the prefix-cache summary.

`sessions.arrow` (one row per session of the plan, ordered by session id): `session_id`,
`client_id`, `turns` (selected), `turns_completed`, `start` (first turn's release, s from the
run start), `end` (last completed turn's completion), `ttlt` (end − start: the session's time to
its last token, think times included), `status` (`completed`: every selected turn completed;
`unfinished`: a turn failed, was abandoned or never released, e.g. at Ctrl-C or a server gone),
`slo_met` (every turn completed within the SLOs given). All recomputed from requests.arrow.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

SESSIONS_FILE = "sessions.arrow"


def meets_slo(col: dict, slo_ttft: float | None, slo_tpot: float | None) -> np.ndarray:
    """Completed requests within every SLO given (unknown TTFT fails; one-token outputs pass TPOT)."""
    ok = col["status"] == "completed"
    if slo_ttft is not None:
        ok &= col["ttft"] <= slo_ttft
    if slo_tpot is not None:
        ok &= ~(col["tpot"] > slo_tpot)
    return ok


def _columns(table: pa.Table) -> dict:
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names if n != "itl"}


def session_table(table: pa.Table, ok: np.ndarray | None = None) -> pa.Table:
    """One row per session (see the module doc); `ok`: requests meeting the SLOs (default: completed)."""
    col = _columns(table)
    sid = col["session_id"].astype(np.uint64)
    done = col["status"] == "completed"
    ok = done if ok is None else ok
    sess, first, inv = np.unique(sid, return_index=True, return_inverse=True)
    m = len(sess)
    turns = np.bincount(inv, minlength=m)
    comp = np.bincount(inv, weights=done, minlength=m).astype(np.int64)
    good = np.bincount(inv, weights=ok, minlength=m).astype(np.int64)
    start = np.full(m, np.inf)
    np.minimum.at(start, inv, np.where(np.isfinite(col["released"]), col["released"], np.inf))
    end = np.full(m, -np.inf)
    np.maximum.at(end, inv, np.where(done, col["completed"], -np.inf))
    start[~np.isfinite(start)] = np.nan
    end[~np.isfinite(end)] = np.nan
    return pa.table({"session_id": pa.array(sess, pa.uint64()), "client_id": pa.array(col["client_id"][first]),
                     "turns": pa.array(turns, pa.int64()), "turns_completed": pa.array(comp, pa.int64()),
                     "start": start, "end": end, "ttlt": end - start,
                     "status": np.where(comp == turns, "completed", "unfinished").tolist(),
                     "slo_met": good == turns})


def session_summary(table: pa.Table, ok: np.ndarray, with_slo: bool, dist) -> dict:
    """Session counts, time-to-last-token percentiles (`dist`, the request summary's) of completed
    sessions, and session goodput."""
    st = session_table(table, ok)
    status = np.asarray(st.column("status").to_pylist())
    done = status == "completed"
    ttlt = st.column("ttlt").to_numpy()
    good = st.column("slo_met").to_numpy(zero_copy_only=False)
    start, end = st.column("start").to_numpy(), st.column("end").to_numpy()
    span = float(np.nanmax(end) - np.nanmin(start)) if np.isfinite(end).any() and np.isfinite(start).any() else 0.0
    turns = st.column("turns").to_numpy()
    return {"sessions": int(st.num_rows), "completed": int(done.sum()), "unfinished": int((~done).sum()),
            "multi_turn": int((turns > 1).sum()), "turns_completed": int(st.column("turns_completed").to_numpy().sum()),
            "ttlt": dist(np.where(done, ttlt, np.nan)),
            "goodput": {"sessions": int(good.sum()), "sessions_per_s": good.sum() / span if span > 0 else None,
                        "fraction": float(good.mean()) if len(good) else None, "slo_given": with_slo}}


def cache_summary(col: dict, done: np.ndarray) -> dict:
    """Prompt-token hit ratios over completed requests: reported by the engine, and expected."""
    inp = col["input_tokens"].astype(np.float64)
    out = {}
    for key, name in (("reported", "cached_tokens"), ("expected", "expected_cached_tokens")):
        v = col.get(name)
        if v is None:
            out[key] = None
            continue
        v = np.asarray(v, np.float64)  # nulls come out as nan
        known = done & np.isfinite(v)
        tokens = float(inp[known].sum())
        out[key] = None if not known.any() else {"requests": int(known.sum()), "cached_tokens": int(v[known].sum()),
                                                "prompt_tokens": int(tokens),
                                                "hit_ratio": float(v[known].sum() / tokens) if tokens else None}
    return out


def sessions_text(s: dict) -> list[str]:
    lines = []
    ss = s.get("sessions")
    if ss:
        d, g = ss["ttlt"], ss["goodput"]
        p = " ".join(f"{k} {d[k]:.2f}s" for k in ("p50", "p90", "p99") if k in d)
        lines.append(f"sessions   {ss['sessions']} ({ss['multi_turn']} multi-turn), {ss['completed']} completed, "
                     f"{ss['unfinished']} unfinished; time to last token {p or '-'}; "
                     f"goodput {g['sessions']} sessions" + (f" ({g['fraction']:.1%})" if g["fraction"] is not None else ""))
    pc = s.get("prefix_cache") or {}
    parts = [f"{k} {v['hit_ratio']:.3f} ({v['cached_tokens']:,} of {v['prompt_tokens']:,} tokens)"
             for k, v in pc.items() if v and v.get("hit_ratio") is not None]
    if parts:
        lines.append("prefix hit " + ", ".join(parts))
    return lines
