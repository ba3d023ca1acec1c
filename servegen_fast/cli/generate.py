"""`servegen-fast generate`: arguments -> sample.job (no library logic here)."""
from __future__ import annotations

import re
from dataclasses import replace
import sys
import time
import warnings

from ..model import rates as R
from ..progress import RowsProgress
from .args import correlation, non_negative, parse_duration, positive


def add_arguments(sub) -> None:
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
    rx.add_argument("--rate", type=positive(), help="constant aggregate rate (req/s)")
    rx.add_argument("--rate-scale", type=positive(), help="scale the pool's own rates (default 1)")
    rx.add_argument("--rate-peak", type=positive(), help="the pool's own rates, scaled so the peak is at most this")
    rx.add_argument("--rate-profile", type=float, nargs=4, metavar=("MEAN", "AMPLITUDE", "PEAK_HOUR", "WEEKEND"),
                    help="diurnal/weekly profile: mean rate, daily amplitude in [0,1], peak hour, weekend factor")
    sm = g.add_argument_group("sampling")
    sm.add_argument("--mode", choices=("servegen", "renewal", "poisson"), default=None,
                    help="arrival semantics (default: servegen, renewal with --clients; see docs/ARCHITECTURE.md)")
    sm.add_argument("--correlation", type=correlation, default=None,
                    help="length correlation: comonotone, independent, or a copula correlation in [0, 1]; default: "
                         "the pool's own (a fitted pool carries the log's), else comonotone (ServeGen's)")
    sm.add_argument("--seed", type=non_negative(int), default=0, help="random seed (default: 0; same seed, same trace)")
    sm.add_argument("--backend", choices=("numpy", "cpu", "cuda"), default="cpu", help="sampling backend (default: cpu)")
    sm.add_argument("--chunk-mb", type=positive(int), default=256,
                    help="memory budget of one generation chunk in MiB (default: 256; at most 32 with --sessions)")
    sm.add_argument("--include-reason-ratio", action="store_true", help="also write reason_ratio (reasoning pools)")
    ss = g.add_argument_group("sessions (docs/sessions.md)")
    ss.add_argument("--sessions", metavar="PROFILE", default=None,
                    help="multi-turn sessions and shared prompts: a profile file (servegen-fast fit --sessions-out) "
                         "or the built-in 'chat' (default: none)")
    ss.add_argument("--block-size", type=positive(int), default=512,
                    help="tokens per KV block of the derived block ids (default: 512, as Mooncake)")
    fl = g.add_argument_group("fleet scale (docs/fleet-scale.md)")
    fl.add_argument("--clients", type=positive(int), default=None,
                    help="synthesize this many clients from the pool (its rate levels, profiles, laws, lengths)")
    fl.add_argument("--mean-rate", type=positive(), default=None,
                    help="with --clients: mean aggregate rate over the horizon (default: the pool's mean)")
    fl.add_argument("--rate-sigma", type=non_negative(), default=0.25,
                    help="with --clients: log-normal jitter of client rate levels (default 0.25)")
    fl.add_argument("--cv-sigma", type=non_negative(), default=0.1,
                    help="with --clients: log-normal jitter of client CVs (default 0.1)")
    fl.add_argument("--max-shift", type=parse_duration, default=3600,
                    help="with --clients: clients are shifted by up to this much either way (default 1h)")
    fl.add_argument("--day-variation", dest="day_sigma", type=non_negative(), default=0.0,
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
    out.add_argument("--session-stream", type=int, choices=(1, 2), default=None,
                     help="with --sessions: the sessions' random stream version: 2 (default) draws session starts "
                          "at rate / E[turns], faster; 1 thins request slots, as traces made before it (recorded "
                          "in the metadata either way)")
    out.add_argument("--file-encoding", type=int, choices=(1, 2), default=None,
                     help="Parquet encoding version: 2 (default) BYTE_STREAM_SPLIT numeric columns, smaller and "
                          "faster; 1 the encoding of traces before it (recorded in the metadata either way)")
    out.add_argument("--arrival-stream", type=int, choices=(1, 2), default=None,
                     help="inter-arrival random stream: 2 (default) Gamma draws with one Philox block per "
                          "attempt, faster; 1 the stream of traces before it (recorded in the metadata either way)")
    out.add_argument("--from-trace-metadata", metavar="TRACE", default=None,
                     help="take pool, time, rate, mode, correlation and seed from TRACE's metadata (regenerate it)")
    out.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="with --partition: one Ray task per partition on the cluster at ADDRESS (host:port, "
                          "ray://host:port; alone: RAY_ADDRESS, a local `ray start`, else a new local one); "
                          "--output may then be a pyarrow filesystem URL (s3://...). Needs the distributed "
                          "extra (docs/distributed.md)")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    out.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    g.set_defaults(func=run)


def _rate(args) -> R.RateFn:
    if args.rate is not None:
        return R.Constant(args.rate)
    if args.rate_peak is not None:
        return R.Bounded(args.rate_peak)
    if args.rate_profile is not None:
        return R.Profile(*args.rate_profile)
    return R.Scaled(1.0 if args.rate_scale is None else args.rate_scale)


def _parse_only(text: str | None):
    if text is None:
        return None
    out = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"--only {text!r}: expected partition indices such as 3, 0-6 or 1,4")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        out.update(range(a, b + 1))
    return sorted(out)


def _job(args, pool_duration_of):
    from ..io.trace import trace_metadata
    from ..sample.job import FleetOptions, Job, job_from_metadata

    if args.from_trace_metadata:
        job = job_from_metadata(trace_metadata(args.from_trace_metadata), args.from_trace_metadata)
        if args.file_encoding is not None:
            job = replace(job, file_encoding=args.file_encoding)
        if args.arrival_stream is not None:
            job = replace(job, arrival_stream=args.arrival_stream)
        return job if args.session_stream is None else replace(job, session_stream=args.session_stream)
    if args.mean_rate is not None and not args.clients:
        raise ValueError("--mean-rate needs --clients (use --rate for a constant aggregate rate)")
    duration = args.duration if args.duration is not None else pool_duration_of() - args.start
    if duration <= 0:
        raise ValueError(f"--duration must be positive (--start {args.start} s, pool ends at "
                         f"{pool_duration_of()} s)" if args.duration is not None else
                         f"nothing to generate: the pool covers {pool_duration_of()} s and --start is "
                         f"{args.start} s")
    fleet = FleetOptions(clients=args.clients, mean_rate=args.mean_rate, rate_sigma=args.rate_sigma,
                         cv_sigma=args.cv_sigma, max_shift=args.max_shift, day_sigma=args.day_sigma,
                         growth=args.growth)
    sessions = None
    if args.sessions is not None:
        from ..model.sessions import ProfileError, load_profiles
        try:
            sessions = load_profiles(args.sessions).to_dict()
        except ProfileError as e:
            raise SystemExit(f"error: {e}") from None
    return Job(pool_name=args.pool, start=args.start, duration=duration, rate=_rate(args), seed=args.seed,
               mode=args.mode, correlation=args.correlation, include_reason_ratio=args.include_reason_ratio,
               fleet=fleet, sessions=sessions, block_size=args.block_size,
               **({} if args.file_encoding is None else {"file_encoding": args.file_encoding}),
               **({} if args.arrival_stream is None else {"arrival_stream": args.arrival_stream}),
               **({} if args.session_stream is None else {"session_stream": args.session_stream}))


def _announce(job, source, args) -> None:
    from ..sample.estimate import estimate, free_bytes

    e = estimate(source, job.start, job.duration, job.rate, job.mode, args.backend)
    print(f"generating {job.duration:,} s into {args.output}: {e.describe()}", file=sys.stderr, flush=True)
    free = free_bytes(args.output)
    if free is not None and e.bytes > free:
        print(f"warning: the trace may need about {e.bytes / 2**30:,.1f} GiB and {free / 2**30:,.1f} GiB are free "
              f"where it goes", file=sys.stderr, flush=True)


def _on_ray(args, job, source, only, progress):
    from ..distributed import generate_on_ray

    if not args.partition:
        raise SystemExit("error: --ray needs --partition hour|day (one task per partition)")
    try:
        return generate_on_ray(job, args.output, partition=args.partition, fmt=args.format or "parquet", only=only,
                               backend=args.backend, chunk_bytes=args.chunk_mb << 20, address=args.ray or None,
                               source=source, progress=progress)
    except (ConnectionError, PermissionError, RuntimeError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


def run(args) -> int:
    from ..io.atomic import check_output
    from ..sample.backend import preload

    only = _parse_only(args.only)
    if only is not None and not args.partition:
        raise ValueError("--only needs --partition hour|day")
    check_output(args.output, "dir" if args.partition else "file", "--output")  # before any work
    if args.ray is None:
        preload(args.backend)  # the kernels' set-up overlaps the imports below and the pool's load
    from ..io.pool_file import open_pool
    from ..sample.job import source_for, write

    pools = {}

    def pool_named(name):
        if name not in pools:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pools[name] = open_pool(name, args.data_dir)
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
        return pools[name]

    job = _job(args, lambda: pool_named(args.pool).duration)
    source = source_for(pool_named(job.pool_name), job)
    if not args.quiet:  # before the work: what it will make, and for how long (also without a terminal)
        _announce(job, source, args)
    progress = RowsProgress(job.duration, enabled=not args.quiet and sys.stderr.isatty() or args.progress)
    t0 = time.perf_counter()
    if args.ray is not None:
        done = _on_ray(args, job, source, only, progress)
    else:
        done = write(job, source, args.output, fmt=args.format, partition=args.partition, only=only,
                     backend=args.backend, chunk_bytes=args.chunk_mb << 20, progress=progress)
    progress(done.total_rows, job.duration, final=True)
    el = time.perf_counter() - t0
    if not args.quiet:
        if done.reused_partitions:
            print(f"kept {done.reused_partitions} complete partition(s) from an earlier run", file=sys.stderr)
        m = done.manifest
        if m is not None and not m["complete"]:
            print(f"{len(m['parts'])} of {m['expected_parts']} partitions present; run without --only "
                  f"to finish the trace", file=sys.stderr)
        if done.total_rows == 0:
            print("warning: the trace has no requests: the pool's rates over this span give none (in servegen "
                  "mode a window yields ceil(rate x 600 s) - 1; try --mode renewal, a higher --rate-scale or a "
                  "longer span)", file=sys.stderr)
        print(f"wrote {done.rows:,} requests over {job.duration:,} s to {done.path} in {el:.1f} s "
              f"({done.rows / max(el, 1e-9) / 1e6:.2f} M req/s)", file=sys.stderr)
    return 0
