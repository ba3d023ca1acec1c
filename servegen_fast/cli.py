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
from . import rates as _rates

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
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, rows: int, done_seconds: float, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        el = now - self.t0
        frac = min(done_seconds / self.total, 1.0)
        eta = el * (1 - frac) / frac if frac > 0 else float("nan")
        bar = "#" * int(frac * 24)
        sys.stderr.write(f"\r[{bar:<24}] {frac:6.1%}  {rows:,} requests  {rows / max(el, 1e-9) / 1e6:.2f} M req/s  "
                         f"elapsed {el:5.1f}s  ETA {eta:5.1f}s ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


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
    from .trace import trace_metadata

    meta = trace_metadata(args.from_trace_metadata)
    if meta.get("generator") != "servegen-fast":
        raise SystemExit(f"error: {args.from_trace_metadata} has no servegen-fast generation metadata")
    args.pool = meta["pool"]
    args.start, args.duration, args.seed = meta["start"], meta["duration"], meta["seed"]
    args.mode, args.correlation = meta["mode"], meta["correlation"]
    args.include_reason_ratio = meta.get("include_reason_ratio", False)
    args._rate_fn = _rates.from_description(meta["rate"])


def cmd_generate(args) -> int:
    from .generate import generate
    from .pool_file import open_pool
    from .trace import trace_schema, write_trace

    if args.from_trace_metadata:
        _apply_trace_metadata(args)
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
    meta = {"generator": "servegen-fast", "version": __version__, "pool": args.pool,
            "pool_category": pool.category, "pool_model": pool.model, "seed": args.seed, "mode": args.mode,
            "correlation": args.correlation, "rate": rate_fn.describe(), "start": start, "duration": duration,
            "include_reason_ratio": args.include_reason_ratio}
    progress = Progress(duration, enabled=not args.quiet and sys.stderr.isatty() or args.progress)
    batches = generate(pool, rate_fn, duration, start=start, seed=args.seed, mode=args.mode,
                       correlation=args.correlation, backend=args.backend, chunk_bytes=args.chunk_mb << 20,
                       include_reason_ratio=args.include_reason_ratio, metadata=meta, progress=progress)
    view = pool.span(start, start + duration)
    schema = trace_schema(view.category, view.fields, args.include_reason_ratio, meta)
    t0 = time.perf_counter()
    rows = 0

    def count(batch):
        nonlocal rows
        rows += batch.num_rows

    out = write_trace(batches, args.output, schema, fmt=args.format, partition=args.partition, on_batch=count)
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

    from .trace import read_trace, trace_metadata

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
    sm.add_argument("--mode", choices=("servegen", "renewal", "poisson"), default="servegen",
                    help="arrival semantics (default: servegen; see docs/ARCHITECTURE.md)")
    sm.add_argument("--correlation", type=_correlation, default="comonotone",
                    help="length correlation: comonotone (default), independent, or a copula correlation in [0, 1]")
    sm.add_argument("--seed", type=int, default=0, help="random seed (default: 0; same seed, same trace)")
    sm.add_argument("--backend", choices=("numpy", "cpu", "cuda"), default="cpu", help="sampling backend (default: cpu)")
    sm.add_argument("--chunk-mb", type=int, default=256, help="memory budget of one generation chunk in MiB (default: 256)")
    sm.add_argument("--include-reason-ratio", action="store_true", help="also write reason_ratio (reasoning pools)")
    out = g.add_argument_group("output")
    out.add_argument("--output", "-o", required=True, help="trace file, or directory with --partition")
    out.add_argument("--format", choices=("parquet", "arrow"), default=None,
                     help="file format (default: from the suffix, else parquet)")
    out.add_argument("--partition", choices=("hour", "day"), default=None, help="one file per hour or day")
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

    from .replay.cli import add_parser as add_replay_parser  # torch-free until a replay runs

    add_replay_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: no partial file was left at the output path", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
