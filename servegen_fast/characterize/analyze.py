"""Characterise a request log or trace, and compare two of them (a fidelity table).

Every statistic is computed from the arrays of a `RequestLog` with NumPy; nothing here needs
matplotlib (plots live in `plots.py`). Definitions (docs/fit-analyze.md):

* rate series: requests per `bin_s` (60 s) bin, divided by the bin length.
* IAT CV: of all inter-arrival times; "at scale s": the request-weighted mean of the IAT CV
  within each s-second window holding at least 3 requests (rate changes between windows drop out).
* index of dispersion of counts (IDC) at scale s: Var/Mean of the request counts of the whole
  s-second bins of the span (1 for a Poisson process, larger when bursty); the IDC curve
  takes s from 0.1 s to 1 h (IDC_SCALES; NaN where the span holds fewer than two bins).
* burstiness B = (σ − μ)/(σ + μ) of the inter-arrival times (−1 periodic, 0 Poisson, → 1 bursty).
* input–output correlation: Pearson of log(1 + tokens) and Spearman's rank correlation.
* fidelity (trace vs. reference): request count error, two-sample KS distances of input and
  output lengths and of IATs, rate-series error Σ|r − r_ref| / Σ r_ref over the common span,
  relative errors of the IAT CV (overall and per scale) and of the IDC, and B's difference.
"""
from __future__ import annotations

import numpy as np

from ..io.sources import RequestLog
from . import prefix_cache as PC

SCALES = (60, 600, 3600)
IDC_SCALES = (0.1, 0.3, 1, 3, 10, 30, 60, 120, 300, 600, 1800, 3600)  # the IDC curve (s); NaN under 2 bins
PERCENTILES = (50, 90, 99)


def ks_2samp(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov distance: the largest gap between the two empirical CDFs."""
    if len(x) == 0 or len(y) == 0:
        return float("nan")
    x, y = np.sort(x), np.sort(y)
    grid = np.concatenate((x, y))
    fx = np.searchsorted(x, grid, side="right") / len(x)
    fy = np.searchsorted(y, grid, side="right") / len(y)
    return float(np.max(np.abs(fx - fy)))


def _cv(v: np.ndarray) -> float:
    return float(v.std() / v.mean()) if len(v) > 1 and v.mean() > 0 else float("nan")


def rate_series(t: np.ndarray, span: float, bin_s: float) -> np.ndarray:
    n_bins = max(int(np.ceil(span / bin_s)), 1)
    counts = np.bincount(np.minimum((t // bin_s).astype(np.int64), n_bins - 1), minlength=n_bins)
    lens = np.minimum(np.arange(1, n_bins + 1) * bin_s, span) - np.arange(n_bins) * bin_s
    return counts / np.maximum(lens, 1e-9)


def windowed_cv(t: np.ndarray, scale: float) -> float:
    """Request-weighted mean IAT CV within `scale`-second windows holding at least 3 requests."""
    if len(t) < 3:
        return float("nan")
    w = (t // scale).astype(np.int64)
    same = w[1:] == w[:-1]
    iat, grp = np.diff(t)[same], w[1:][same]
    if len(iat) == 0:
        return float("nan")
    _, inv, n = np.unique(grp, return_inverse=True, return_counts=True)
    s1 = np.bincount(inv, weights=iat)
    s2 = np.bincount(inv, weights=iat * iat)
    mean = s1 / n
    ok = (n >= 2) & (mean > 0)
    cv = np.sqrt(np.maximum(s2[ok] / n[ok] - mean[ok] ** 2, 0.0)) / mean[ok]
    return float(np.average(cv, weights=n[ok] + 1)) if ok.any() else float("nan")


def index_of_dispersion(t: np.ndarray, span: float, scale: float) -> float:
    n_full = int(span // scale)
    if n_full < 2:
        return float("nan")
    counts = np.bincount((t[t < n_full * scale] // scale).astype(np.int64), minlength=n_full)
    return float(counts.var() / counts.mean()) if counts.mean() > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    def ranks(v):
        order = np.argsort(v, kind="stable")
        sv = v[order]
        # average ranks over ties
        first = np.concatenate(([True], sv[1:] != sv[:-1]))
        grp = np.cumsum(first) - 1
        start = np.flatnonzero(first)
        end = np.concatenate((start[1:], [len(sv)]))
        avg = (start + end - 1) / 2.0
        r = np.empty(len(v))
        r[order] = avg[grp]
        return r
    return _pearson(ranks(x), ranks(y))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def length_percentiles(v: np.ndarray) -> dict:
    if len(v) == 0:
        return {}
    q = np.percentile(v, PERCENTILES)
    return {"mean": float(v.mean()), **{f"p{p}": float(x) for p, x in zip(PERCENTILES, q)}, "max": float(v.max())}


def summarize(log: RequestLog, client_key: str | None = None, bin_s: float = 60.0) -> dict:
    """Summary statistics of a log or trace (see the module docstring)."""
    t = log.timestamp
    span = log.span
    iat = np.diff(t)
    out = {"source": log.report.path, "requests": len(t), "duration_s": span,
           "mean_rate": len(t) / span if span > 0 else float("nan"),
           "rate_bin_s": bin_s, "rate_series": rate_series(t, span, bin_s).tolist() if len(t) else [],
           "peak_rate_1s": float(np.bincount(t.astype(np.int64)).max()) if len(t) else 0.0,
           "iat_cv": _cv(iat),
           "iat_cv_by_scale": {str(s): windowed_cv(t, s) for s in SCALES},
           "idc_by_scale": {str(s): index_of_dispersion(t, span, s) for s in IDC_SCALES},
           "burstiness": (float((iat.std() - iat.mean()) / (iat.std() + iat.mean()))
                          if len(iat) > 1 and iat.std() + iat.mean() > 0 else float("nan")),
           "input_tokens": length_percentiles(log.input_tokens), "output_tokens": length_percentiles(log.output_tokens),
           "io_correlation": {"pearson_log": _pearson(np.log1p(log.input_tokens), np.log1p(log.output_tokens)),
                              "spearman": spearman(log.input_tokens, log.output_tokens)}}
    key = client_key or ("client_id" if "client_id" in log.columns else None)
    if key:
        if key not in log.columns:
            raise ValueError(f"client key {key!r} is not a column of {log.report.path}; it has {log.key_columns()}")
        _, counts = np.unique(log.columns[key], return_counts=True)
        counts = np.sort(counts)[::-1]
        out["clients"] = {"key": key, "count": len(counts),
                          "top_share": {str(k): float(counts[:k].sum() / len(t)) for k in (1, 10, 100)}}
    if log.blocks is not None:
        out["sessions"] = PC.summarize_sessions(log)
    return out


def compare(trace: RequestLog, reference: RequestLog, bin_s: float = 60.0) -> dict:
    """Fidelity of `trace` against `reference` (both summarised, plus distances and errors)."""
    a, b = summarize(trace, bin_s=bin_s), summarize(reference, bin_s=bin_s)
    span = min(trace.span, reference.span)
    ra = rate_series(trace.timestamp[trace.timestamp < span], span, bin_s)
    rb = rate_series(reference.timestamp[reference.timestamp < span], span, bin_s)

    def rel(x, y):
        return float((x - y) / y) if np.isfinite(x) and np.isfinite(y) and y != 0 else float("nan")

    fid = {"requests_error": rel(a["requests"], b["requests"]),
           "ks_input_tokens": ks_2samp(trace.input_tokens, reference.input_tokens),
           "ks_output_tokens": ks_2samp(trace.output_tokens, reference.output_tokens),
           "ks_iat": ks_2samp(np.diff(trace.timestamp), np.diff(reference.timestamp)),
           "rate_series_error": float(np.abs(ra - rb).sum() / rb.sum()) if rb.sum() > 0 else float("nan"),
           "iat_cv_error": rel(a["iat_cv"], b["iat_cv"]),
           "iat_cv_error_by_scale": {s: rel(a["iat_cv_by_scale"][s], b["iat_cv_by_scale"][s]) for s in a["iat_cv_by_scale"]},
           "idc_error_by_scale": {s: rel(a["idc_by_scale"][s], b["idc_by_scale"][s]) for s in a["idc_by_scale"]},
           "burstiness_difference": float(a["burstiness"] - b["burstiness"]),
           "io_spearman_difference": float(a["io_correlation"]["spearman"] - b["io_correlation"]["spearman"])}
    if trace.blocks is not None and reference.blocks is not None:
        fid["sessions"] = PC.compare_sessions(trace, reference, ks_2samp)
    return {"trace": a, "reference": b, "fidelity": fid}


# --------------------------------------------------------------------------- text
def _fmt(v, kind="num") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if kind == "pct":
        return f"{v:+.1%}"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return f"{v:,.0f}"
    return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"


def _rows(s: dict) -> list[tuple[str, object]]:
    rows = [("requests", s["requests"]), ("duration (s)", s["duration_s"]), ("mean rate (req/s)", s["mean_rate"]),
            (f"peak rate, {s['rate_bin_s']:.0f} s bins", max(s["rate_series"], default=float("nan"))),
            ("peak rate, 1 s bins", s["peak_rate_1s"]), ("IAT CV", s["iat_cv"])]
    rows += [(f"IAT CV within {k} s", v) for k, v in s["iat_cv_by_scale"].items()]
    rows += [(f"IDC of counts, {k} s bins", v) for k, v in s["idc_by_scale"].items()]
    rows.append(("burstiness B", s["burstiness"]))
    for f in ("input_tokens", "output_tokens"):
        rows += [(f"{f} {k}", v) for k, v in s[f].items()]
    rows += [("in/out Pearson (log)", s["io_correlation"]["pearson_log"]),
             ("in/out Spearman", s["io_correlation"]["spearman"])]
    if "clients" in s:
        rows.append((f"clients ({s['clients']['key']})", s["clients"]["count"]))
        rows += [(f"top {k} clients' share", v) for k, v in s["clients"]["top_share"].items()]
    if "sessions" in s:
        rows += PC.format_rows(s["sessions"])
    return rows


def format_summary(s: dict) -> str:
    lines = [f"summary of {s['source']}"]
    lines += [f"  {name:28s} {_fmt(v):>14s}" for name, v in _rows(s)]
    return "\n".join(lines)


def format_comparison(c: dict) -> str:
    a, b, f = c["trace"], c["reference"], c["fidelity"]
    ra, rb = dict(_rows(a)), dict(_rows(b))
    rate_label = f"rate-series error (L1, {a['rate_bin_s']:.0f} s bins)"
    lines = [f"trace:     {a['source']}", f"reference: {b['source']}", "",
             f"  {'statistic':28s} {'trace':>14s} {'reference':>14s}"]
    for name in ra:
        lines.append(f"  {name:28s} {_fmt(ra[name]):>14s} {_fmt(rb.get(name)):>14s}")
    lines += ["", "fidelity (trace against reference)",
              f"  {'request count error':36s} {_fmt(f['requests_error'], 'pct'):>10s}",
              f"  {'KS distance, input tokens':36s} {_fmt(f['ks_input_tokens']):>10s}",
              f"  {'KS distance, output tokens':36s} {_fmt(f['ks_output_tokens']):>10s}",
              f"  {'KS distance, inter-arrival times':36s} {_fmt(f['ks_iat']):>10s}",
              f"  {rate_label:36s} {_fmt(f['rate_series_error'], 'pct'):>10s}",
              f"  {'IAT CV error':36s} {_fmt(f['iat_cv_error'], 'pct'):>10s}"]
    lines += [f"  {f'IAT CV error within {k} s':36s} {_fmt(v, 'pct'):>10s}" for k, v in f["iat_cv_error_by_scale"].items()]
    lines += [f"  {f'IDC error, {k} s bins':36s} {_fmt(v, 'pct'):>10s}" for k, v in f["idc_error_by_scale"].items()]
    lines += [f"  {'burstiness B difference':36s} {_fmt(f['burstiness_difference']):>10s}",
              f"  {'in/out Spearman difference':36s} {_fmt(f['io_spearman_difference']):>10s}"]
    if "sessions" in f:
        s = f["sessions"]
        lines += [f"  {'block hit ratio difference, infinite':36s} {_fmt(s['hit_ratio_infinite_difference']):>10s}",
                  f"  {'LRU hit ratio, largest |difference|':36s} {_fmt(s['hit_ratio_lru_max_abs_difference']):>10s}",
                  f"  {'KS distance, turns per session':36s} {_fmt(s['ks_turns_per_session']):>10s}",
                  f"  {'KS distance, inter-turn gap':36s} {_fmt(s['ks_inter_turn_gap']):>10s}",
                  f"  {'KS distance, context growth':36s} {_fmt(s['ks_context_growth']):>10s}"]
    return "\n".join(lines)


def trace_summary(path) -> dict:
    """Requests, duration, mean and peak rate, IAT CV, clients and every field's percentiles
    (list fields: also their item counts) of a trace file or partitioned directory."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..io.trace import read_trace, trace_metadata, trace_span

    table = read_trace(path)
    meta = trace_metadata(table.schema)
    n = table.num_rows
    ts = table.column("timestamp").to_numpy() if n else np.zeros(0)
    span = trace_span(path)  # one partition file: its own hour or day, not the whole trace's
    duration = span[1] - span[0] if span else float(ts[-1] if n else 0.0)
    out = {"path": str(path), "requests": n, "duration_s": duration,
           "mean_rate": n / duration if duration > 0 else 0.0}
    if n:
        out["peak_rate_1s"] = float(np.bincount(ts.astype(np.int64)).max())
        out["peak_rate_60s"] = float(np.bincount((ts // 60).astype(np.int64)).max() / 60.0)
        out["iat_cv"] = _cv(np.diff(ts))
        out["clients"] = int(len(pc.unique(table.column("client_id"))))
        fields = {}
        if "session_id" in table.column_names:
            out["sessions"] = int(len(pc.unique(table.column("session_id"))))
        for name in table.column_names:
            if name in ("timestamp", "client_id", "session_id"):
                continue
            col = table.column(name)
            if pa.types.is_list(col.type):
                fields[name + " (items)"] = length_percentiles(pc.list_value_length(col).to_numpy(zero_copy_only=False))
                col = pc.list_flatten(col)
            fields[name] = length_percentiles(col.to_numpy(zero_copy_only=False) if len(col) else np.zeros(0))
        out["fields"] = fields
    out["metadata"] = meta
    return out
