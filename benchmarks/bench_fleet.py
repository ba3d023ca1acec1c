"""Fleet scale: N synthetic clients over days, written to partitioned zstd Parquet by the CLI.

The run is `servegen-fast generate --pool builtin --clients N --mean-rate R --duration Dd
--partition day` in a subprocess (its peak RSS is its own). Reported: requests, seconds,
requests/s, peak RSS, bytes per request, per-day time and the projection to --project-days.
Baseline, in this process: a per-request Python generator (one dict per request, ServeGen
style) over the first window of the same population, so the ratio is like for like.

    python benchmarks/bench_fleet.py                       # 10^6 clients, 3 days, 1,000 req/s
    python benchmarks/bench_fleet.py --clients 100000 --days 1 --mean-rate 100
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine


def python_baseline(pop, seconds: int = 600) -> float:
    """Requests/s of a per-request Python generator on the population's first window(s)."""
    from servegen_fast.model.fields import LAW_GAMMA

    rng = np.random.default_rng(0)
    sub = pop.materialize(0, max(1, seconds // pop.window_size))
    inp, out = sub.field_index("input_tokens"), sub.field_index("output_tokens")
    t0 = time.perf_counter()
    requests = []
    for w in range(sub.n_windows):
        length = sub.window_len[w]
        for c in np.flatnonzero(sub.active[:, w]):
            n = rng.poisson(sub.rate[c, w] * length)
            if n == 0:
                continue
            shape = sub.shape[c, w]
            iats = rng.gamma(shape, size=n + 1) if sub.law[c, w] == LAW_GAMMA else rng.weibull(shape, size=n + 1)
            ts = np.cumsum(iats)[:-1] * (length / iats.sum()) + sub.window_start[w]
            vi, pi = sub.dists.get(sub.dist_id[c, w, inp])
            vo, po = sub.dists.get(sub.dist_id[c, w, out])
            ci, co = np.cumsum(pi), np.cumsum(po)
            for t in ts:
                u = rng.random()
                requests.append({"timestamp": float(t), "client_id": int(sub.client_ids[c]),
                                 "input_tokens": int(vi[min(np.searchsorted(ci, u), len(vi) - 1)]),
                                 "output_tokens": int(vo[min(np.searchsorted(co, u), len(vo) - 1)])})
    requests.sort(key=lambda r: r["timestamp"])
    return len(requests) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--mean-rate", type=float, default=1000.0)
    ap.add_argument("--project-days", type=int, default=30, help="report the projected time of this many days")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--output", default=None, help="output directory (default: a temporary one, removed)")
    ap.add_argument("--arrival-stream", default=None, help="passed to the CLI (default: its default)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output or Path(tmp) / "trace")
        cmd = [sys.executable, "-m", "servegen_fast.cli", "generate", "--pool", "builtin", "--clients",
               str(args.clients), "--mean-rate", str(args.mean_rate), "--duration", f"{args.days}d",
               "--partition", "day", "--backend", args.backend, "--seed", "1", "-o", str(out)]
        if args.arrival_stream is not None:
            cmd += ["--arrival-stream", args.arrival_stream]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if p.returncode:
            print(p.stderr, file=sys.stderr)
            return p.returncode
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        from servegen_fast.io.manifest import read_manifest

        manifest = read_manifest(out)
        rows = sum(e["rows"] for e in manifest["parts"])
        size = sum(e["bytes"] for e in manifest["parts"])

    from servegen_fast.model import population as P
    from servegen_fast.io.pool_file import open_pool
    pop = P.synthesize(open_pool("builtin"), args.clients, mean_rate=args.mean_rate, duration=args.days * 86400,
                       seed=1, mean_over=(0, args.days * 86400))
    base = python_baseline(pop)
    res = {"machine": machine(), "command": " ".join(cmd[2:]), "clients": args.clients, "days": args.days,
           "requests": rows, "seconds": round(seconds, 1), "req_per_s": rows / seconds,
           "peak_rss_mib": round(rss), "bytes_per_request": size / max(rows, 1),
           "seconds_per_day": seconds / args.days,
           "projected_seconds": seconds / args.days * args.project_days, "project_days": args.project_days,
           "baseline_req_per_s": base, "ratio": rows / seconds / base}
    print(f"machine: {res['machine']}")
    print(f"{rows:,} requests, {args.clients:,} clients, {args.days} days in {seconds:.1f} s = "
          f"{res['req_per_s'] / 1e6:.2f} M req/s; peak RSS {rss:.0f} MiB; {res['bytes_per_request']:.2f} B/request")
    print(f"per day {res['seconds_per_day']:.1f} s -> {args.project_days} days ~ "
          f"{math.ceil(res['projected_seconds'] / 60)} min; per-request Python baseline {base:,.0f} req/s "
          f"({res['ratio']:.0f}x)")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
