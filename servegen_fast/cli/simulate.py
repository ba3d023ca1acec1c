"""`servegen-fast simulate`: arguments -> simulate.cluster.simulate_trace."""
from __future__ import annotations

import json
import sys

from .args import add_no_spread, add_release, parse_seconds, positive


def add_arguments(sub) -> None:
    s = sub.add_parser("simulate", help="simulate a cluster of engines under a trace (from an engine profile)",
                       description="Discrete-event simulation of N continuous-batching instances (token budget, paged "
                                   "KV cache with preemption) behind a router, with pass times from an engine profile "
                                   "measured on the real engine (`servegen-fast profile`). Writes the same results as "
                                   "replay. See docs/simulate.md.")
    s.add_argument("trace", help="trace file or partitioned directory")
    s.add_argument("--output", "-o", required=True, help="results directory (requests.arrow, summary.json, ...)")
    s.add_argument("--profile", "-p", default="cpu-tiny",
                   help="engine profile: a file from `servegen-fast profile`, or built-in cpu-tiny (default)")
    s.add_argument("--instances", "-n", type=positive(int), default=1, help="engine instances (default 1)")
    s.add_argument("--router", choices=("round-robin", "least-loaded", "prefix-aware"), default="round-robin",
                   help="how requests are spread (prefix-aware needs a prefix_id or session_id column)")
    s.add_argument("--time-scale", type=positive(), default=1.0, help="multiply trace times by this")
    s.add_argument("--start", type=parse_seconds, default=None, help="from this trace time")
    s.add_argument("--end", type=parse_seconds, default=None, help="up to this trace time")
    s.add_argument("--max-requests", type=int, default=None, help="at most this many requests")
    add_release(s, "simulated completion")
    s.add_argument("--slo-ttft", type=parse_seconds, default=None, help="TTFT SLO for goodput (e.g. 500ms)")
    s.add_argument("--slo-tpot", type=parse_seconds, default=None, help="TPOT SLO for goodput (e.g. 50ms)")
    add_no_spread(s)
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the draws from the profile's pass-time spread (default 0)")
    s.add_argument("--plot", action="store_true", help="also write PNG plots (needs the plot extra)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--quiet", "-q", action="store_true", help="no summary")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..replay.results import summary_text
    from ..simulate.cluster import simulate_trace

    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    summary = simulate_trace(args.trace, args.output, profile=args.profile, instances=args.instances,
                             router=args.router, time_scale=args.time_scale, start=args.start, end=args.end,
                             max_requests=args.max_requests, release=args.release, slo_ttft=args.slo_ttft,
                             slo_tpot=args.slo_tpot, spread=not args.no_spread, seed=args.seed,
                             plot=args.plot, log=log)
    if args.json:
        print(json.dumps(summary, indent=1))
    elif not args.quiet:
        print(summary_text(summary).replace("replay of", "simulation of", 1), end="")
        print(f"results in {args.output}", file=sys.stderr)
    return 0
