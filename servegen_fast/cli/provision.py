"""`servegen-fast provision`: arguments -> simulate.provision.provision."""
from __future__ import annotations

import json
import sys

from .args import add_no_spread, add_release, parse_seconds, positive


def _fraction(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"goodput must be a fraction in (0, 1], got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"goodput must be a fraction in (0, 1], got {text}")
    return v


def add_arguments(sub) -> None:
    p = sub.add_parser("provision", help="smallest number of instances meeting an SLO, realistic vs naive load",
                       description="Search the smallest N of simulated instances whose SLO attainment (requests with "
                                   "TTFT and TPOT within the SLO) reaches the goodput target, for the trace and for "
                                   "naive versions of it (Poisson at the same per-window rate with aggregate lengths; "
                                   "the trace with lengths shuffled across clients), and report the under-provisioning "
                                   "(N_real - N_naive) / N_real. See docs/simulate.md.")
    p.add_argument("trace", help="trace file or partitioned directory")
    p.add_argument("--profile", "-p", default="cpu-tiny", help="engine profile file, or built-in cpu-tiny (default)")
    p.add_argument("--slo-ttft", type=parse_seconds, default=None, help="TTFT SLO (e.g. 500ms)")
    p.add_argument("--slo-tpot", type=parse_seconds, default=None, help="TPOT SLO (e.g. 50ms)")
    p.add_argument("--goodput", type=_fraction, default=0.99, help="fraction of requests meeting the SLO (default 0.99)")
    p.add_argument("--router", choices=("round-robin", "least-loaded", "prefix-aware"), default="least-loaded",
                   help="router of the simulated cluster (default least-loaded; prefix-aware: by the trace's "
                        "session_id or prefix_id, the naive variants least-loaded)")
    add_release(p, "simulated completion", "; the naive variants are open loop")
    p.add_argument("--variants", default="realistic,poisson,shuffled",
                   help="comma-separated: realistic (the trace), poisson, shuffled (default: all three)")
    p.add_argument("--window", type=parse_seconds, default=600.0,
                   help="window of the Poisson variant's aggregate rate (default 600 s, ServeGen's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the naive variants and of the pass-time draws")
    p.add_argument("--max-instances", type=positive(int), default=4096, help="give up above this N (default 4096)")
    p.add_argument("--time-scale", type=positive(), default=1.0, help="multiply trace times by this")
    p.add_argument("--start", type=parse_seconds, default=None, help="from this trace time")
    p.add_argument("--end", type=parse_seconds, default=None, help="up to this trace time")
    add_no_spread(p)
    p.add_argument("--output", "-o", default=None, help="directory for provision.json (and provision.png with --plot)")
    p.add_argument("--plot", action="store_true", help="plot SLO attainment against N (needs the plot extra and -o)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..simulate.provision import provision

    if args.plot and not args.output:
        raise ValueError("--plot needs --output (the directory for provision.png)")
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    r = provision(args.trace, profile=args.profile, slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot,
                  goodput=args.goodput, router=args.router, window=args.window, seed=args.seed,
                  max_instances=args.max_instances, time_scale=args.time_scale, start=args.start, end=args.end,
                  variants=[v.strip() for v in args.variants.split(",") if v.strip()], release=args.release,
                  output=args.output, spread=not args.no_spread,
                  plot=args.plot, log=log)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{'variant':10s} {'requests':>9s} {'N':>6s} {'under-provisioning':>19s}")
    for v, x in r["variants"].items():
        u = x.get("under_provisioning")
        print(f"{v:10s} {x['requests']:9d} {x['instances']:6d} {'-' if u is None else f'{u:+.1%}':>19s}")
    return 0
