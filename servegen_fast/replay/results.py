"""Replay results: the per-request Arrow file, engine snapshots, and the summary.

Files in the output directory (each written under a temporary name and renamed):
``requests.arrow`` (one row per selected request), ``engine_stats.arrow`` (memory / KV-cache
snapshots over time, where the engine exposes them), with sessions ``sessions.arrow`` (one row
per session, `sessions.py`), ``summary.json`` and ``summary.txt``
(written last). The summary's numbers are recomputed from ``requests.arrow`` by
`summarize`, so the two always agree; ``complete`` is false when the run was interrupted.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from ..io.atomic import atomic_path, write_text
from .plan import ReplayPlan
from .sessions import SESSIONS_FILE, cache_summary, meets_slo, session_summary, session_table, sessions_text

META_KEY = b"servegen_fast_replay"
REQUESTS_FILE = "requests.arrow"
STATS_FILE = "engine_stats.arrow"
SUMMARY_JSON = "summary.json"
SUMMARY_TXT = "summary.txt"
STATUSES = ("completed", "failed", "abandoned", "not_released")
LATENCIES = ("ttft", "tpot", "e2e", "queueing")
QUANTILES = (50, 90, 99)


@dataclass
class RunRecord:
    """What the loop measured; times are seconds from the run start (`t0` on CLOCK)."""

    plan: ReplayPlan
    t0: float
    released: np.ndarray
    started: np.ndarray
    first_token: np.ndarray
    completed: np.ndarray
    generated: np.ndarray
    preempted: np.ndarray
    status: list
    errors: list
    stats: list  # (time from t0, {name: value}) snapshots
    interrupted: bool
    wall_end: float
    extra: list = field(default_factory=list)  # (pyarrow field, values): more request columns (HTTP replay)
    scheduled: np.ndarray | None = None  # actual release times asked for (closed loop); None: the plan's
    cached: np.ndarray | None = None  # cached prompt tokens the engine reported (-1: not reported)
    expected_cached: np.ndarray | None = None  # from the trace's block ids (-1: not computed)


REQUEST_SCHEMA = pa.schema([
    pa.field("request", pa.int64(), nullable=False),  # row in the trace
    pa.field("client_id", pa.uint32(), nullable=False),
    pa.field("arrival", pa.float64(), nullable=False),  # trace timestamp (s)
    pa.field("scheduled", pa.float64(), nullable=False),  # release time asked for (s from the run start)
    pa.field("released", pa.float64()),  # actual release (nan: not released)
    pa.field("lateness", pa.float64()),  # released - scheduled (>= 0)
    pa.field("started", pa.float64()),  # engine took it out of its queue (nan: not exposed)
    pa.field("first_token", pa.float64()),
    pa.field("completed", pa.float64()),
    pa.field("ttft", pa.float64()),  # first_token - released
    pa.field("tpot", pa.float64()),  # (completed - first_token) / (generated - 1)
    pa.field("e2e", pa.float64()),  # completed - released
    pa.field("queueing", pa.float64()),  # started - released
    pa.field("input_tokens", pa.uint32(), nullable=False),  # served
    pa.field("output_tokens", pa.uint32(), nullable=False),  # forced
    pa.field("trace_input_tokens", pa.uint32(), nullable=False),
    pa.field("trace_output_tokens", pa.uint32(), nullable=False),
    pa.field("generated_tokens", pa.uint32(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("preempted", pa.bool_(), nullable=False),
    pa.field("error", pa.string()),
])


SESSION_FIELDS = [pa.field("session_id", pa.uint64()), pa.field("turn", pa.uint16())]
CACHE_FIELDS = [pa.field("cached_tokens", pa.int64()),  # the engine's usage.prompt_tokens_details.cached_tokens
                pa.field("expected_cached_tokens", pa.int64())]  # trace block ids through an LRU (replay/cache.py)


def _nullable(v) -> pa.Array:
    v = np.asarray(v, np.int64)
    return pa.array(v, pa.int64(), mask=v < 0)


def request_table(rec, metadata: dict) -> pa.Table:
    p = rec.plan
    sched = p.scheduled if getattr(rec, "scheduled", None) is None else rec.scheduled
    gen = rec.generated.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(gen > 1, (rec.completed - rec.first_token) / (gen - 1), np.nan)
    cols = {
        "request": p.row, "client_id": p.client_id, "arrival": p.arrival, "scheduled": sched,
        "released": rec.released, "lateness": rec.released - sched, "started": rec.started,
        "first_token": rec.first_token, "completed": rec.completed, "ttft": rec.first_token - rec.released,
        "tpot": tpot, "e2e": rec.completed - rec.released, "queueing": rec.started - rec.released,
        "input_tokens": p.input_tokens, "output_tokens": p.output_tokens, "trace_input_tokens": p.trace_input,
        "trace_output_tokens": p.trace_output, "generated_tokens": rec.generated.astype(np.uint32),
        "status": rec.status, "preempted": rec.preempted, "error": rec.errors,
    }
    arrays = [pa.array(cols[f.name], type=f.type, from_pandas=False) for f in REQUEST_SCHEMA]
    fields = list(REQUEST_SCHEMA)
    if p.session_id is not None:
        fields += SESSION_FIELDS
        arrays += [pa.array(p.session_id, pa.uint64()), pa.array(p.turn, pa.uint16())]
    cached, expected = getattr(rec, "cached", None), getattr(rec, "expected_cached", None)
    if expected is not None or (cached is not None and (np.asarray(cached) >= 0).any()):  # where known
        n = len(p)
        fields += CACHE_FIELDS
        arrays += [_nullable(np.full(n, -1) if cached is None else cached),
                   _nullable(np.full(n, -1) if expected is None else expected)]
    for f, values in getattr(rec, "extra", ()):  # e.g. HTTP replay: http_status, error_kind, itl, ...
        fields.append(f)
        arrays.append(pa.array(values, type=f.type, from_pandas=False))
    schema = pa.schema(fields, metadata={META_KEY: json.dumps(metadata).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def stats_table(stats: list) -> pa.Table:
    names = sorted({k for _, s in stats for k in s})
    cols = {"time": pa.array([t for t, _ in stats], pa.float64())}
    for k in names:
        cols[k] = pa.array([float(s.get(k, math.nan)) for _, s in stats], pa.float64())
    return pa.table(cols)


def write_arrow(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        with ipc.new_file(str(tmp), table.schema) as w:
            w.write_table(table)


@contextlib.contextmanager
def request_writer(path: Path, metadata: dict):
    """Yield `write(rec)`: appends `rec`'s requests (request_table) to the Arrow file at `path`
    as record batches, under a temporary name renamed on success, so a long run holds one part
    at a time. Every part must give the same schema (same optional columns)."""
    with atomic_path(path) as tmp:
        with contextlib.ExitStack() as stack:
            writer = None

            def write(rec) -> None:
                nonlocal writer
                table = request_table(rec, metadata)
                if writer is None:
                    writer = stack.enter_context(ipc.new_file(str(tmp), table.schema))
                writer.write_table(table)

            yield write
            if writer is None:
                raise ValueError(f"{path}: no requests were written")


def read_requests(directory) -> pa.Table:
    with ipc.open_file(Path(directory) / REQUESTS_FILE) as r:
        return r.read_all()


def _dist(v: np.ndarray) -> dict:
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"count": 0}
    q = np.percentile(v, QUANTILES)  # NumPy's default (linear interpolation)
    out = {"count": int(len(v)), "mean": float(v.mean())}
    out.update({f"p{k}": float(x) for k, x in zip(QUANTILES, q)})
    out["max"] = float(v.max())
    return out


def summarize(table: pa.Table, slo_ttft: float | None = None, slo_tpot: float | None = None,
              stats: pa.Table | None = None) -> dict:
    """Counts, latency percentiles, throughput, goodput and release lateness of a request table."""
    col = {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names}
    status = col["status"]
    done = status == "completed"
    counts = {"selected": int(len(status)), "released": int(np.isfinite(col["released"]).sum())}
    counts.update({s: int((status == s).sum()) for s in STATUSES})
    counts["preempted"] = int(col["preempted"].sum())
    counts["wrong_length"] = int((done & (col["generated_tokens"] != col["output_tokens"])).sum())
    out: dict = {"counts": counts}
    out["latency"] = {k: _dist(np.where(done, col[k], np.nan)) for k in LATENCIES}
    if "itl" in col:  # HTTP replay: gaps between streamed token events of completed requests
        itl = table.column("itl").filter(pa.array(done)).combine_chunks().flatten()
        out["latency"]["itl"] = _dist(itl.to_numpy(zero_copy_only=False).astype(np.float64))
    if "error_kind" in col:
        kinds = col["error_kind"][status == "failed"]
        out["errors"] = {str(k): int(c) for k, c in zip(*np.unique(kinds.astype(str), return_counts=True))}
    lat = col["lateness"]
    out["lateness"] = _dist(lat)
    out["lateness"]["over_1ms"] = int((lat[np.isfinite(lat)] > 1e-3).sum())
    rel = col["released"][np.isfinite(col["released"])]
    end = col["completed"][done]
    span = float(end.max() - rel.min()) if len(end) and len(rel) else 0.0
    out["duration_s"] = span
    sched = col["scheduled"]
    sched = sched[np.isfinite(sched)]  # closed loop: a turn never due (its session stopped) has none
    offered_span = float(sched.max() - sched.min()) if len(sched) > 1 else 0.0
    out["offered"] = {"requests": int(len(status)), "span_s": offered_span,
                      "rate": len(status) / offered_span if offered_span > 0 else None}
    gen = col["generated_tokens"][done].astype(np.float64)
    inp = col["input_tokens"][done].astype(np.float64)
    per_s = (lambda x: x / span if span > 0 else None)
    out["throughput"] = {"requests_per_s": per_s(done.sum()), "output_tokens_per_s": per_s(gen.sum()),
                         "total_tokens_per_s": per_s(gen.sum() + inp.sum())}
    ok = meets_slo(col, slo_ttft, slo_tpot)  # nan TTFT (unknown) fails; one-token outputs pass TPOT
    out["slo"] = {"ttft_s": slo_ttft, "tpot_s": slo_tpot}
    out["goodput"] = {"requests": int(ok.sum()), "requests_per_s": per_s(ok.sum()),
                      "fraction": float(ok.sum() / counts["selected"]) if counts["selected"] else None}
    out["prefix_cache"] = cache_summary(col, done)
    if "session_id" in col:
        out["sessions"] = session_summary(table, ok, slo_ttft is not None or slo_tpot is not None, _dist)
    if stats is not None and stats.num_rows:
        out["engine_stats"] = engine_summary(stats)
    return out


def engine_summary(stats: pa.Table) -> dict:
    """Samples, max and mean of each engine snapshot column."""
    es = {"samples": int(stats.num_rows)}
    for name in stats.column_names:
        if name != "time":
            v = stats.column(name).to_numpy()
            v = v[np.isfinite(v)]
            if len(v):
                es[f"{name}_max"] = float(v.max())
                es[f"{name}_mean"] = float(v.mean())
    return es


def _fmt(x, unit="ms"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x * 1e3:.1f}" if unit == "ms" else f"{x:.2f}"


def summary_text(s: dict) -> str:
    c = s["counts"]
    lines = [f"replay of {s.get('trace', '?')} on {s.get('engine', {}).get('name', '?')} "
             f"({s.get('engine', {}).get('model', '?')}, {s.get('engine', {}).get('device', '?')})"
             + ("" if s.get("complete", True) else "  [INCOMPLETE: interrupted]"),
             f"requests   {c['selected']} selected, {c['released']} released, {c['completed']} completed, "
             f"{c['failed']} failed, {c['abandoned']} abandoned, {c['not_released']} not released"
             + (f", {c['preempted']} preempted" if c["preempted"] else "")
             + (f", {c['wrong_length']} WRONG LENGTH" if c["wrong_length"] else ""),
             f"{'ms':12s} {'p50':>9s} {'p90':>9s} {'p99':>9s} {'mean':>9s} {'max':>9s}"]
    for name, d in [*s["latency"].items(), ("lateness", s["lateness"])]:
        lines.append(f"{name:12s} " + " ".join(f"{_fmt(d.get(k)):>9s}" for k in ("p50", "p90", "p99", "mean", "max")))
    t, g = s["throughput"], s["goodput"]
    lines.append(f"throughput {_fmt(t['requests_per_s'], '')} req/s, {_fmt(t['output_tokens_per_s'], '')} output tok/s "
                 f"over {s['duration_s']:.2f} s")
    slo = ", ".join(f"{k[:-2].upper()} <= {v * 1e3:g} ms" for k, v in s["slo"].items() if v is not None) or "none"
    frac = "-" if g["fraction"] is None else f"{g['fraction']:.1%}"
    lines.append(f"goodput    {_fmt(g['requests_per_s'], '')} req/s ({g['requests']} requests, {frac}) under SLO: {slo}")
    lines.append(f"lateness   {s['lateness'].get('over_1ms', 0)} releases later than 1 ms")
    lines += sessions_text(s)
    if s.get("errors"):
        lines.append("errors     " + ", ".join(f"{k} {v}" for k, v in s["errors"].items()))
    es = s.get("engine_stats")
    if es:
        parts = [f"{k} {v:.3g}" for k, v in es.items() if k.endswith("_max")]
        lines.append("engine     " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def write_results(directory, rec, *, metadata: dict, slo_ttft=None, slo_tpot=None) -> dict:
    """Write requests.arrow, engine_stats.arrow, summary.json and summary.txt; return the summary."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    meta = dict(metadata, complete=not rec.interrupted)
    table = request_table(rec, meta)
    write_arrow(table, d / REQUESTS_FILE)
    stats = stats_table(rec.stats)
    write_arrow(stats, d / STATS_FILE)
    if "session_id" in table.column_names:
        ok = meets_slo({n: table.column(n).to_numpy(zero_copy_only=False) for n in ("status", "ttft", "tpot")},
                       slo_ttft, slo_tpot)
        write_arrow(session_table(table, ok), d / SESSIONS_FILE)
    return write_summary(d, dict(meta, **summarize(table, slo_ttft, slo_tpot, stats)))


def write_summary(directory: Path, summary: dict) -> dict:
    """summary.txt and summary.json (last: their presence says the results are complete)."""
    write_text(directory / SUMMARY_TXT, summary_text(summary))
    write_text(directory / SUMMARY_JSON, json.dumps(summary, indent=1))
    return summary
