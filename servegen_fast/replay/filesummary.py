"""`results.summarize` of a requests.arrow file read record batch by record batch: memory bounded
by the largest batch, whatever the number of requests (a streamed simulation's month of traffic).

Counts, sums, extremes and means are accumulated in one pass. Percentiles are exact, as
NumPy's default (linear interpolation between two order statistics): each wanted order
statistic is found by a radix select over the values' 64-bit sortable keys, 16 bits a pass
(a 65,536-bin histogram of the values still matching the key's known high bits), so four more
passes and no copy of the values. Everything equals `summarize` of the whole table exactly
except the means, whose sums are added batch by batch instead of pairwise over the whole
column (equal within a few ulps; tests hold them to 1e-12 relative).

Files with columns that need the whole table (sessions, HTTP replay's itl and error kinds)
are summarized by `summarize` itself.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .results import LATENCIES, QUANTILES, STATUSES, engine_summary, summarize
from .sessions import cache_summary, meets_slo

_WHOLE = ("session_id", "itl", "error_kind")  # columns summarize needs the whole table for
_COLUMNS = ("status", "released", "scheduled", "lateness", "completed", "preempted", "generated_tokens",
            "output_tokens", "input_tokens", *LATENCIES)
_DISTS = (*LATENCIES, "lateness")
_BITS = 16


def summarize_file(path, slo_ttft: float | None = None, slo_tpot: float | None = None,
                   stats: pa.Table | None = None) -> dict:
    """The summary `summarize(read_requests(...))` gives, for the requests.arrow at `path`."""
    path = Path(path)
    with pa.OSFile(str(path)) as f, ipc.open_file(f) as r:
        names = r.schema.names
        missing = [c for c in _COLUMNS if c not in names]
        if missing:
            raise ValueError(f"{path}: not a requests file (no column {', '.join(missing)})")
        if any(c in names for c in _WHOLE) or any(c.endswith("cached_tokens") for c in names):
            return summarize(r.read_all(), slo_ttft, slo_tpot, stats)
        acc = _first_pass(r, slo_ttft, slo_tpot)
        quantiles = {k: _Quantiles(acc["n"][k]) for k in _DISTS}
        for level in range(64 // _BITS):  # each pass fixes 16 more bits of every wanted key
            for i in range(r.num_record_batches):
                vals = _values(_columns(r.get_batch(i)))
                for k, q in quantiles.items():
                    q.count(vals[k], level)
            for q in quantiles.values():
                q.settle(level)
    return _summary(acc, {k: q.values() for k, q in quantiles.items()}, slo_ttft, slo_tpot, stats)


def _columns(batch: pa.RecordBatch) -> dict:
    return {n: batch.column(n).to_numpy(zero_copy_only=False) for n in _COLUMNS}


def _values(col: dict) -> dict:
    """Per distribution, the values summarize takes percentiles of (finite only)."""
    done = col["status"] == "completed"
    out = {k: col[k][done] for k in LATENCIES}
    out["lateness"] = col["lateness"]
    return {k: v[np.isfinite(v)] for k, v in out.items()}


def _first_pass(r, slo_ttft, slo_tpot) -> dict:
    acc = {"selected": 0, "released": 0, "preempted": 0, "wrong_length": 0, "over_1ms": 0, "done": 0, "ok": 0,
           "gen": 0.0, "inp": 0.0, **{s: 0 for s in STATUSES}, "n": dict.fromkeys(_DISTS, 0),
           "sum": dict.fromkeys(_DISTS, 0.0), "max": dict.fromkeys(_DISTS, -np.inf),
           "rel_min": np.inf, "end_max": -np.inf, "sched_min": np.inf, "sched_max": -np.inf, "sched_n": 0}
    for i in range(r.num_record_batches):
        col = _columns(r.get_batch(i))
        status = col["status"]
        done = status == "completed"
        acc["selected"] += len(status)
        rel = col["released"][np.isfinite(col["released"])]
        acc["released"] += len(rel)
        for s in STATUSES:
            acc[s] += int((status == s).sum())
        acc["preempted"] += int(col["preempted"].sum())
        acc["wrong_length"] += int((done & (col["generated_tokens"] != col["output_tokens"])).sum())
        for k, v in _values(col).items():
            if len(v):
                acc["n"][k] += len(v)
                acc["sum"][k] += float(v.sum())
                acc["max"][k] = max(acc["max"][k], float(v.max()))
        lat = col["lateness"]
        acc["over_1ms"] += int((lat[np.isfinite(lat)] > 1e-3).sum())
        end = col["completed"][done]
        if len(rel):
            acc["rel_min"] = min(acc["rel_min"], float(rel.min()))
        if len(end):
            acc["end_max"] = max(acc["end_max"], float(end.max()))
        sched = col["scheduled"][np.isfinite(col["scheduled"])]
        if len(sched):
            acc["sched_min"] = min(acc["sched_min"], float(sched.min()))
            acc["sched_max"] = max(acc["sched_max"], float(sched.max()))
            acc["sched_n"] += len(sched)
        acc["done"] += int(done.sum())
        acc["gen"] += float(col["generated_tokens"][done].astype(np.float64).sum())  # integers: exact in any order
        acc["inp"] += float(col["input_tokens"][done].astype(np.float64).sum())
        acc["ok"] += int(meets_slo(col, slo_ttft, slo_tpot).sum())
    return acc


def _keys(v: np.ndarray) -> np.ndarray:
    """uint64 keys in the order of the float64 values (negative: all bits flipped; else the sign bit set)."""
    b = np.ascontiguousarray(v, np.float64).view(np.uint64)
    return np.where(b >> np.uint64(63), ~b, b | np.uint64(1 << 63))


def _value(key: int) -> float:
    b = key & ~(1 << 63) if key >> 63 else ~key & (2**64 - 1)
    return float(np.array([b], np.uint64).view(np.float64)[0])


class _Quantiles:
    """Radix select of the order statistics NumPy's linear percentiles of n values need."""

    def __init__(self, n: int):
        self.n = n
        self.ranks = sorted({r for q in QUANTILES for r in _ranks(n, q)}) if n else []
        self.prefix = dict.fromkeys(self.ranks, 0)  # rank -> the key's bits found so far
        self.left = {r: r for r in self.ranks}  # rank among the values with that prefix
        self.hist: dict = {}

    def count(self, v: np.ndarray, level: int) -> None:
        if not self.ranks or not len(v):
            return
        keys = _keys(v)
        shift = np.uint64(64 - _BITS * (level + 1))
        for p in set(self.prefix.values()):
            sel = keys if level == 0 else keys[(keys >> (shift + np.uint64(_BITS))) == np.uint64(p)]
            h = np.bincount(((sel >> shift) & np.uint64(2**_BITS - 1)).astype(np.int64), minlength=2**_BITS)
            self.hist[p] = self.hist.get(p, 0) + h

    def settle(self, level: int) -> None:
        for r in self.ranks:
            cum = np.cumsum(self.hist[self.prefix[r]])
            j = int(np.searchsorted(cum, self.left[r], side="right"))
            self.left[r] -= int(cum[j - 1]) if j else 0
            self.prefix[r] = (self.prefix[r] << _BITS) | j
        self.hist = {}

    def values(self) -> dict:
        """{percentile: value} as np.percentile gives."""
        if not self.n:
            return {}
        at = {r: np.float64(_value(self.prefix[r])) for r in self.ranks}
        return {q: _lerp(self.n, q, at) for q in QUANTILES}


def _index(n: int, q) -> np.float64:
    """np.percentile's (method linear) virtual index of percentile q among n sorted values."""
    return (n - 1) * (np.float64(q) / 100)


def _ranks(n: int, q) -> tuple:
    vi = _index(n, q)
    if vi >= n - 1:
        return (n - 1,)
    lo = int(np.floor(vi))
    return lo, lo + 1


def _lerp(n: int, q, at: dict) -> float:
    """np.percentile's interpolation between the order statistics, operation for operation."""
    vi = _index(n, q)
    if vi >= n - 1:
        return float(at[n - 1])
    lo = np.floor(vi)
    a, b, t = at[int(lo)], at[int(lo) + 1], vi - lo
    d = b - a
    return float(b - d * (1 - t) if t >= 0.5 else a + d * t)


def _summary(acc: dict, pct: dict, slo_ttft, slo_tpot, stats) -> dict:
    def dist(k):
        n = acc["n"][k]
        if not n:
            return {"count": 0}
        out = {"count": n, "mean": acc["sum"][k] / n}
        out.update({f"p{q}": pct[k][q] for q in QUANTILES})
        out["max"] = acc["max"][k]
        return out

    counts = {"selected": acc["selected"], "released": acc["released"], **{s: acc[s] for s in STATUSES},
              "preempted": acc["preempted"], "wrong_length": acc["wrong_length"]}
    out: dict = {"counts": counts, "latency": {k: dist(k) for k in LATENCIES}}
    out["lateness"] = dist("lateness")
    out["lateness"]["over_1ms"] = acc["over_1ms"]
    span = acc["end_max"] - acc["rel_min"] if acc["done"] and acc["released"] else 0.0
    out["duration_s"] = float(span)
    offered = acc["sched_max"] - acc["sched_min"] if acc["sched_n"] > 1 else 0.0
    n = acc["selected"]
    out["offered"] = {"requests": n, "span_s": float(offered), "rate": n / offered if offered > 0 else None}
    per_s = (lambda x: x / span if span > 0 else None)
    out["throughput"] = {"requests_per_s": per_s(acc["done"]), "output_tokens_per_s": per_s(acc["gen"]),
                         "total_tokens_per_s": per_s(acc["gen"] + acc["inp"])}
    out["slo"] = {"ttft_s": slo_ttft, "tpot_s": slo_tpot}
    out["goodput"] = {"requests": acc["ok"], "requests_per_s": per_s(acc["ok"]),
                      "fraction": float(acc["ok"] / n) if n else None}
    out["prefix_cache"] = cache_summary({"input_tokens": np.zeros(0)}, np.zeros(0, bool))
    if stats is not None and stats.num_rows:
        out["engine_stats"] = engine_summary(stats)
    return out
