"""`servegen-fast info`: a trace's summary, or the sampling backends that work here."""
from __future__ import annotations

import json


def add_arguments(sub) -> None:
    i = sub.add_parser("info", help="summarise a trace, or list the available backends",
                       description="Summarise a trace: requests, duration, rates, IAT CV, length percentiles.")
    i.add_argument("trace", nargs="?", help="trace file or partitioned directory")
    i.add_argument("--backends", action="store_true", help="list the sampling backends and whether they work here")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=run)


def run(args) -> int:
    if args.backends:
        from ..sample.backend import backends_status

        for name, status in backends_status().items():
            print(f"{name:6s} {status}")
        return 0
    if not args.trace:
        raise ValueError("give a TRACE path, or --backends")
    from ..characterize.analyze import trace_summary

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
        if "sessions" in s:
            print(f"sessions   {s['sessions']:,} (block ids derived on read: docs/sessions.md)")
        print(f"{'field':24s} {'mean':>10s} {'p50':>9s} {'p90':>9s} {'p99':>9s} {'max':>9s}")
        for name, p in s["fields"].items():
            if p:
                print(f"{name:24s} {p['mean']:10.1f} {p['p50']:9.0f} {p['p90']:9.0f} {p['p99']:9.0f} {p['max']:9.0f}")
    meta = s["metadata"]
    if meta:
        print(f"made by    servegen-fast {meta.get('version')}: pool {meta.get('pool')}, seed {meta.get('seed')}, "
              f"mode {meta.get('mode')}, rate {json.dumps(meta.get('rate'))}")
    return 0
