"""The `servegen-fast` command: generate traces, describe them, list backends."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings

import numpy as np

from . import __version__
from .model import rates as _rates
from .progress import ProgressLine

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """'90m', '36h', '14d', '2w', '3600' or '1h30m' -> whole seconds."""
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+", s):
        return int(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use seconds or units s/m/h/d/w, e.g. 90m, 36h, 14d")
    total = sum(float(n) * _UNITS[u] for n, u in parts)
    if not total.is_integer():
        raise argparse.ArgumentTypeError(f"duration {text!r} is not a whole number of seconds")
    return int(total)


def _correlation(text: str):
    if text in ("comonotone", "independent"):
        return text
    try:
        rho = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"correlation must be comonotone, independent or a number in [0, 1], "
                                         f"got {text!r}") from None
    if not 0 <= rho <= 1:
        raise argparse.ArgumentTypeError(f"copula correlation must be in [0, 1], got {rho}")
    return rho


def _positive(kind):
    def conv(text):
        v = kind(text)
        if v < 0:
            raise argparse.ArgumentTypeError(f"must be non-negative, got {text}")
        return v
    return conv


class Progress:
    """A one-line progress bar on stderr: requests written, rate, simulated time done, ETA."""

    def __init__(self, total_seconds: float, enabled: bool):
        self.total = max(float(total_seconds), 1e-9)
        self.line = ProgressLine(enabled)
        self.t0 = time.perf_counter()

    def __call__(self, rows: int, done_seconds: float, final: bool = False) -> None:
        el = time.perf_counter() - self.t0
        frac = min(done_seconds / self.total, 1.0)
        eta = el * (1 - frac) / frac if frac > 0 else float("nan")
        self.line.show(frac, f"{rows:,} requests  {rows / max(el, 1e-9) / 1e6:.2f} M req/s  "
                             f"elapsed {el:5.1f}s  ETA {eta:5.1f}s", final)


# --------------------------------------------------------------------------- generate
def _rate_from_args(args) -> _rates.RateFn:
    if args.rate is not None:
        return _rates.Constant(args.rate)
    if args.rate_peak is not None:
        return _rates.Bounded(args.rate_peak)
    if args.rate_profile is not None:
        return _rates.Profile(*args.rate_profile)
    return _rates.Scaled(1.0 if args.rate_scale is None else args.rate_scale)


def _apply_trace_metadata(args) -> None:
    from .io.trace import trace_metadata

    meta = trace_metadata(args.from_trace_metadata)
    if meta.get("generator") != "servegen-fast":
        raise SystemExit(f"error: {args.from_trace_metadata} has no servegen-fast generation metadata")
    args.pool = meta["pool"]
    args.start, args.duration, args.seed = meta["start"], meta["duration"], meta["seed"]
    args.mode, args.correlation = meta["mode"], meta["correlation"]
    args.include_reason_ratio = meta.get("include_reason_ratio", False)
    args._rate_fn = _rates.from_description(meta["rate"])
    pop = meta.get("population")
    if pop:
        args.clients = pop.get("n_clients")
        args.mean_rate = pop.get("mean_rate")
        for key in ("rate_sigma", "cv_sigma", "max_shift", "day_sigma", "growth"):
            if key in pop:
                setattr(args, key, pop[key])
        args.horizon = pop["duration"]
        args.mean_over = pop.get("mean_over")


def _population(args, pool, end: int):
    """The pool to generate from: `pool` itself, a synthesized population (--clients), or the
    pool repeated past its end (a duration beyond it, --day-variation or --growth)."""
    from .model import population as P

    horizon = getattr(args, "horizon", None) or max(end, pool.duration)
    if args.clients:
        # the mean rate holds over the generated span, not the whole horizon
        mean_over = getattr(args, "mean_over", None) or (args.start, end)
        return P.synthesize(pool, args.clients, mean_rate=args.mean_rate, duration=horizon, seed=args.seed,
                            rate_sigma=args.rate_sigma, cv_sigma=args.cv_sigma, max_shift=args.max_shift,
                            day_sigma=args.day_sigma, growth=args.growth, mean_over=mean_over)
    if end > pool.duration or args.day_sigma or args.growth:
        return P.extend_horizon(pool, horizon, day_sigma=args.day_sigma, growth=args.growth, seed=args.seed)
    return pool


def _parse_only(text: str | None):
    if text is None:
        return None
    out = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise SystemExit(f"error: --only {text!r}: expected partition indices such as 3, 0-6 or 1,4")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        out.update(range(a, b + 1))
    return sorted(out)


def cmd_generate(args) -> int:
    from .sample.generate import generate
    from .io.pool_file import open_pool
    from .io.trace import PARTITIONS, trace_schema, write_partitions, write_trace

    if args.from_trace_metadata:
        _apply_trace_metadata(args)
    only = _parse_only(args.only)
    if only is not None and not args.partition:
        raise SystemExit("error: --only needs --partition hour|day")
    rate_fn = getattr(args, "_rate_fn", None) or _rate_from_args(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = open_pool(args.pool, args.data_dir)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    start = args.start
    duration = args.duration if args.duration is not None else pool.duration - start
    if duration <= 0:
        raise SystemExit(f"error: nothing to generate: the pool covers {pool.duration} s and --start is {start} s")
    pool = _population(args, pool, start + duration)
    mode = args.mode or ("renewal" if args.clients else "servegen")
    meta = {"generator": "servegen-fast", "version": __version__, "pool": args.pool,
            "pool_category": pool.category, "pool_model": pool.model, "seed": args.seed, "mode": mode,
            "correlation": args.correlation, "rate": rate_fn.describe(), "start": start, "duration": duration,
            "include_reason_ratio": args.include_reason_ratio}
    if getattr(pool, "params", None):
        meta["population"] = pool.params
    view = pool.span(start, start + duration)
    schema = trace_schema(view.category, view.fields, args.include_reason_ratio, meta)
    progress = Progress(duration, enabled=not args.quiet and sys.stderr.isatty() or args.progress)
    t0 = time.perf_counter()
    rows = 0

    def count(batch):
        nonlocal rows
        rows += batch.num_rows

    def batches(only_span=None, report=progress):
        return generate(pool, rate_fn, duration, start=start, seed=args.seed, mode=mode,
                        correlation=args.correlation, backend=args.backend, chunk_bytes=args.chunk_mb << 20,
                        include_reason_ratio=args.include_reason_ratio, metadata=meta, progress=report,
                        only=only_span)

    if args.partition:
        span = PARTITIONS[args.partition]
        if start % pool.window_size or span % pool.window_size:
            raise SystemExit(f"error: --partition needs --start on a {pool.window_size}-s window boundary")
        done = {"rows": 0, "reused": 0}

        def part_progress(r, sec):  # sec: seconds from the trace start, as generate() reports them
            progress(done["rows"] + r, sec)

        def on_partition(entry, reused):
            done["rows"] += entry["rows"]
            done["reused"] += reused

        manifest = write_partitions(lambda a, b: batches((a, b), part_progress), args.output, schema,
                                    duration=duration, fmt=args.format or "parquet", partition=args.partition,
                                    only=only, on_batch=count, on_partition=on_partition)
        out = args.output
        progress(done["rows"], duration, final=True)
        if done["reused"] and not args.quiet:
            print(f"kept {done['reused']} complete partition(s) from an earlier run", file=sys.stderr)
        if not manifest["complete"] and not args.quiet:
            print(f"{len(manifest['parts'])} of {manifest['expected_parts']} partitions present; run without --only "
                  f"to finish the trace", file=sys.stderr)
    else:
        out = write_trace(batches(), args.output, schema, fmt=args.format, on_batch=count)
        progress(rows, duration, final=True)
    el = time.perf_counter() - t0
    if not args.quiet:
        print(f"wrote {rows:,} requests over {duration:,} s to {out} in {el:.1f} s "
              f"({rows / max(el, 1e-9) / 1e6:.2f} M req/s)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- info
def trace_summary(path) -> dict:
    """Requests, duration, mean and peak rate, IAT CV, clients and length percentiles of a trace."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .io.trace import read_trace, trace_metadata

    table = read_trace(path)
    meta = trace_metadata(table.schema)
    n = table.num_rows
    ts = table.column("timestamp").to_numpy() if n else np.zeros(0)
    duration = float(meta.get("duration") or (ts[-1] if n else 0.0))
    out = {"path": str(path), "requests": n, "duration_s": duration,
           "mean_rate": n / duration if duration > 0 else 0.0}
    if n:
        per_s = np.bincount(ts.astype(np.int64))
        per_min = np.bincount((ts // 60).astype(np.int64))
        out["peak_rate_1s"] = float(per_s.max())
        out["peak_rate_60s"] = float(per_min.max() / 60.0)
        iat = np.diff(ts)
        out["iat_cv"] = float(iat.std() / iat.mean()) if len(iat) > 1 and iat.mean() > 0 else float("nan")
        out["clients"] = int(len(pc.unique(table.column("client_id"))))
        fields = {}
        for name in table.column_names:
            if name in ("timestamp", "client_id"):
                continue
            col = table.column(name)
            if pa.types.is_list(col.type):
                counts = pc.list_value_length(col).to_numpy(zero_copy_only=False)
                fields[name + " (items)"] = _percentiles(counts)
                col = pc.list_flatten(col)
            vals = col.to_numpy(zero_copy_only=False) if len(col) else np.zeros(0)
            fields[name] = _percentiles(vals)
        out["fields"] = fields
    out["metadata"] = meta
    return out


def _percentiles(v: np.ndarray) -> dict:
    if len(v) == 0:
        return {}
    q = np.percentile(v, [50, 90, 99])
    return {"mean": float(np.mean(v)), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
            "max": float(np.max(v))}


def backends_summary() -> dict:
    out = {"numpy": "available (reference)", "cpu": "available"}
    try:
        import numba

        out["cpu"] = f"available (numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads)"
    except ImportError:  # pragma: no cover - numba is a core dependency
        out["cpu"] = "unavailable: numba not installed"
    out["cuda"] = "available"
    try:
        from .kernels import cuda as _  # noqa: F401
    except ImportError as e:
        out["cuda"] = f"unavailable: {e}"
    return out


def cmd_info(args) -> int:
    if args.backends:
        for name, status in backends_summary().items():
            print(f"{name:6s} {status}")
        return 0
    if not args.trace:
        raise SystemExit("error: give a TRACE path, or --backends")
    s = trace_summary(args.trace)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"trace      {s['path']}")
    print(f"requests   {s['requests']:,}")
    print(f"duration   {s['duration_s']:,.0f} s")
    print(f"mean rate  {s['mean_rate']:,.2f} req/s")
    if s["requests"]:
        print(f"peak rate  {s['peak_rate_1s']:,.0f} req/s (1 s bins), {s['peak_rate_60s']:,.2f} req/s (60 s bins)")
        print(f"IAT CV     {s['iat_cv']:.3f}")
        print(f"clients    {s['clients']:,}")
        print(f"{'field':24s} {'mean':>10s} {'p50':>9s} {'p90':>9s} {'p99':>9s} {'max':>9s}")
        for name, p in s["fields"].items():
            if p:
                print(f"{name:24s} {p['mean']:10.1f} {p['p50']:9.0f} {p['p90']:9.0f} {p['p99']:9.0f} {p['max']:9.0f}")
    meta = s["metadata"]
    if meta:
        print(f"made by    servegen-fast {meta.get('version')}: pool {meta.get('pool')}, seed {meta.get('seed')}, "
              f"mode {meta.get('mode')}, rate {json.dumps(meta.get('rate'))}")
    return 0


# --------------------------------------------------------------------------- fit, analyze
def _read_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-bad-row", choices=("error", "drop"), default="error",
                   help="a malformed row (bad field count, unparseable timestamp, negative length): stop with an "
                        "error naming its line (default), or drop it and count it in the read report")
    p.add_argument("--sort", action="store_true", help="sort a log whose timestamps go backwards (default: error)")
    p.add_argument("--drop-failed", action="store_true",
                   help="BurstGPT: drop rows with zero response tokens (default: keep them, flagged)")


def _read(path, fmt, args):
    from .io.sources import read_log

    return read_log(path, fmt, on_error="drop" if args.on_bad_row == "drop" else "raise", sort=args.sort,
                    drop_failed=args.drop_failed)


def cmd_fit(args) -> int:
    from .characterize.fit import FitOptions, fit_pool
    from .io.pool_file import save_pool

    log = _read(args.log, args.format, args)
    opts = FitOptions(window=args.window, length_window=args.length_window, min_requests=args.min_requests,
                      min_length_samples=args.min_length_samples, length_points=args.length_points,
                      shape_rule=args.shape_rule)
    result = fit_pool(log, args.client_key, opts)
    save_pool(result.pool, args.output)
    if args.report:
        from .io.atomic import write_text

        write_text(args.report, json.dumps({**result.summary(), "client_labels": result.labels}, indent=1))
    if not args.quiet:
        print(log.report.describe())
        print(result.describe())
        print(f"wrote {args.output}")
    return 0


def cmd_analyze(args) -> int:
    from .characterize import analyze as A

    trace = _read(args.trace, args.format, args)
    ref = _read(args.against, args.against_format, args) if args.against else None
    if ref is None:
        result = A.summarize(trace, args.client_key, bin_s=args.bin)
        text = A.format_summary(result)
    else:
        result = A.compare(trace, ref, bin_s=args.bin)
        text = A.format_comparison(result)
    if args.plots:
        from .characterize.plots import write_plots

        paths = write_plots(trace, args.plots, ref, bin_s=args.bin)
        text += "\n\nplots: " + ", ".join(str(p) for p in paths)
    print(json.dumps(result, indent=1) if args.json else text)
    return 0


def _add_fit_parsers(sub) -> None:
    from .io.sources import FORMATS

    f = sub.add_parser("fit", help="fit a client pool to a request log",
                       description="Fit a per-client pool (rates, IAT laws, length distributions) to a request log; "
                                   "see docs/fit-analyze.md.")
    f.add_argument("log", help="request log: Azure CSV, BurstGPT CSV, Mooncake JSONL, or a trace")
    f.add_argument("--format", choices=("auto",) + FORMATS, default="auto", help="log format (default: from the file)")
    f.add_argument("--client-key", default=None,
                   help="column(s) naming the client, comma-separated (e.g. 'Model,Log Type'; a trace: client_id); "
                        "default: the whole log is one client")
    f.add_argument("--output", "-o", required=True, help="pool file to write (.parquet)")
    f.add_argument("--window", type=int, default=600, help="arrival window in seconds (default: 600)")
    f.add_argument("--length-window", type=int, default=21600, help="length window in seconds (default: 21600)")
    f.add_argument("--min-requests", type=int, default=10,
                   help="requests a window needs to fit its own law; sparser windows borrow (default: 10)")
    f.add_argument("--min-length-samples", type=int, default=20,
                   help="requests a length window needs for its own distributions (default: 20)")
    f.add_argument("--length-points", type=int, default=256,
                   help="most support points of a length distribution (default: 256)")
    f.add_argument("--shape-rule", choices=("moments", "mle"), default="moments",
                   help="law shape: match the window's IAT CV (default) or the maximum-likelihood shape")
    f.add_argument("--report", default=None, help="also write the fit report as JSON to this file")
    f.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    _read_args(f)
    f.set_defaults(func=cmd_fit)

    a = sub.add_parser("analyze", help="summarise a trace or log; compare it with another (fidelity table)",
                       description="Summarise a trace or request log; with --against, a side-by-side fidelity table.")
    a.add_argument("trace", help="trace or request log to analyse")
    a.add_argument("--format", choices=("auto",) + FORMATS, default="auto", help="its format (default: from the file)")
    a.add_argument("--against", default=None, help="reference log or trace to compare with")
    a.add_argument("--against-format", choices=("auto",) + FORMATS, default="auto",
                   help="the reference's format (default: from the file)")
    a.add_argument("--client-key", default=None, help="column for the top clients' share (default: client_id if any)")
    a.add_argument("--bin", type=float, default=60.0, help="rate-series bin in seconds (default: 60)")
    a.add_argument("--plots", default=None, metavar="DIR", help="write PNG plots into DIR (needs matplotlib)")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    _read_args(a)
    a.set_defaults(func=cmd_analyze)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servegen-fast", description="Generate realistic LLM-serving workloads, fast.")
    p.add_argument("--version", action="version", version=f"servegen-fast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a trace file from a client pool",
                       description="Generate a time-ordered request trace from a client pool.")
    src = g.add_argument_group("pool")
    src.add_argument("--pool", default="builtin",
                     help="'builtin', a pool file (.parquet), a ServeGen model directory, or '<category>/<model>' "
                          "under --data-dir (default: builtin)")
    src.add_argument("--data-dir", default=None,
                     help="ServeGen data directory holding <category>/<model> (default: $SERVEGEN_DATA_DIR, ./data)")
    tm = g.add_argument_group("time")
    tm.add_argument("--start", type=parse_duration, default=0, help="start within the pool (e.g. 0, 20h, 3d; default: 0)")
    tm.add_argument("--duration", type=parse_duration, default=None,
                    help="trace length (e.g. 3600, 90m, 36h, 14d; default: to the pool's end)")
    rt = g.add_argument_group("rate (one of)")
    rx = rt.add_mutually_exclusive_group()
    rx.add_argument("--rate", type=_positive(float), help="constant aggregate rate (req/s)")
    rx.add_argument("--rate-scale", type=_positive(float), help="scale the pool's own rates (default 1)")
    rx.add_argument("--rate-peak", type=_positive(float), help="the pool's own rates, scaled so the peak is at most this")
    rx.add_argument("--rate-profile", type=float, nargs=4, metavar=("MEAN", "AMPLITUDE", "PEAK_HOUR", "WEEKEND"),
                    help="diurnal/weekly profile: mean rate, daily amplitude in [0,1], peak hour, weekend factor")
    sm = g.add_argument_group("sampling")
    sm.add_argument("--mode", choices=("servegen", "renewal", "poisson"), default=None,
                    help="arrival semantics (default: servegen, renewal with --clients; see docs/ARCHITECTURE.md)")
    sm.add_argument("--correlation", type=_correlation, default="comonotone",
                    help="length correlation: comonotone (default), independent, or a copula correlation in [0, 1]")
    sm.add_argument("--seed", type=int, default=0, help="random seed (default: 0; same seed, same trace)")
    sm.add_argument("--backend", choices=("numpy", "cpu", "cuda"), default="cpu", help="sampling backend (default: cpu)")
    sm.add_argument("--chunk-mb", type=int, default=256, help="memory budget of one generation chunk in MiB (default: 256)")
    sm.add_argument("--include-reason-ratio", action="store_true", help="also write reason_ratio (reasoning pools)")
    fl = g.add_argument_group("fleet scale (docs/fleet-scale.md)")
    fl.add_argument("--clients", type=int, default=None,
                    help="synthesize this many clients from the pool (its rate levels, profiles, laws, lengths)")
    fl.add_argument("--mean-rate", type=float, default=None,
                    help="with --clients: mean aggregate rate over the horizon (default: the pool's mean)")
    fl.add_argument("--rate-sigma", type=_positive(float), default=0.25,
                    help="with --clients: log-normal jitter of client rate levels (default 0.25)")
    fl.add_argument("--cv-sigma", type=_positive(float), default=0.1,
                    help="with --clients: log-normal jitter of client CVs (default 0.1)")
    fl.add_argument("--max-shift", type=parse_duration, default=3600,
                    help="with --clients: clients are shifted by up to this much either way (default 1h)")
    fl.add_argument("--day-variation", dest="day_sigma", type=_positive(float), default=0.0,
                    help="log-normal day-to-day variation of all rates, sigma (default 0)")
    fl.add_argument("--growth", type=float, default=0.0,
                    help="growth trend: rates multiply by (1 + GROWTH) each day (default 0)")
    out = g.add_argument_group("output")
    out.add_argument("--output", "-o", required=True, help="trace file, or directory with --partition")
    out.add_argument("--format", choices=("parquet", "arrow"), default=None,
                     help="file format (default: from the suffix, else parquet)")
    out.add_argument("--partition", choices=("hour", "day"), default=None,
                     help="one file per hour or day, each generated on its own; re-running the same command "
                          "keeps complete partitions and redoes missing or damaged ones")
    out.add_argument("--only", default=None, metavar="PARTS",
                     help="with --partition: generate only these partitions (e.g. 3, 0-6, 1,4); each is "
                          "byte-identical to the same partition of the whole run")
    out.add_argument("--from-trace-metadata", metavar="TRACE", default=None,
                     help="take pool, time, rate, mode, correlation and seed from TRACE's metadata (regenerate it)")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    out.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("info", help="summarise a trace, or list the available backends",
                       description="Summarise a trace: requests, duration, rates, IAT CV, length percentiles.")
    i.add_argument("trace", nargs="?", help="trace file or partitioned directory")
    i.add_argument("--backends", action="store_true", help="list the sampling backends and whether they work here")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=cmd_info)
    _add_fit_parsers(sub)

    from .replay.cli import add_parser as add_replay_parser  # torch-free until a replay runs

    add_replay_parser(sub)
    from .replay.http.server import add_parser as add_serve_parser

    add_serve_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: no partial file was left at the output path", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
