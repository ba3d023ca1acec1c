"""Speed of the cluster simulator: simulated requests per second on one core for a
10-instance cluster, against the plain-Python event loop (`simulate.reference`, the tests'
oracle: one pass at a time) timed in the same run on the first requests of the same trace.

    python benchmarks/bench_simulate.py                       # 1 h of m-large, 10 instances
    python benchmarks/bench_simulate.py --fleet-day           # also: 1 day of a 10^6-client fleet trace,
                                                              # the whole table and streamed (peak RSS of each)
    python benchmarks/bench_simulate.py --sessions            # also: closed loop + prefix reuse vs open loop

The trace: language/m-large from 12h, aggregate --rate req/s (default 100), played at
--time-scale (default 40: 2.5 req/s, about the load 10 instances of the built-in cpu-tiny
profile keep within a 1 s TTFT); the profile: built-in cpu-tiny, or --profile. The kernel is
serial (one core); best of --repeat runs after a warm-up run (JIT cache load).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine, peak_rss_mib, servegen_root  # noqa: E402


def _trace(path: Path, data: Path, *extra: str) -> None:
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "servegen_fast.cli", "generate", "--data-dir", str(data), "-o",
                        str(path), "-q", *extra], check=True, stderr=subprocess.DEVNULL)


def _best(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--time-scale", type=float, default=40.0)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--baseline-requests", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fleet-day", action="store_true")
    ap.add_argument("--sessions", action="store_true", help="also a chat-sessions trace: closed loop with prefix "
                    "reuse against open loop without, same trace, same run")
    ap.add_argument("--fleet-instances", type=int, default=200)
    ap.add_argument("--fleet-case", nargs=2, metavar=("HOW", "TRACE"), help=argparse.SUPPRESS)
    ap.add_argument("--profile", default="cpu-tiny",
                    help="engine profile (default built-in cpu-tiny; one from `servegen-fast profile` has a pass-time "
                         "spread, which the kernel draws from at every pass with a prefill)")
    ap.add_argument("--work", default=None, help="folder for the generated traces (default: a temporary one)")
    a = ap.parse_args()
    if a.fleet_case:
        return fleet_case(a.fleet_case[0], a.fleet_case[1], a.fleet_instances)

    from servegen_fast.io.trace import read_trace
    from servegen_fast.replay.plan import make_plan
    from servegen_fast.simulate.cluster import run_plan
    from servegen_fast.simulate.profile import load_profile
    from servegen_fast.simulate.reference import simulate_reference

    data = servegen_root()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_simulate_"))
    work.mkdir(parents=True, exist_ok=True)
    prof = load_profile(a.profile)
    limit = prof.measured_on["max_model_len"]
    print(f"machine: {machine()}; profile {a.profile} ({len(prof.spread)} spread quantiles)")
    hour = work / "m-large-1h.parquet"
    _trace(hour, data, "--pool", "language/m-large", "--start", "12h", "--duration", "1h", "--rate", str(a.rate),
           "--seed", "5")
    plan = make_plan(read_trace(hour), time_scale=a.time_scale, max_model_len=limit)
    print(f"{'case':28s} {'requests':>9s} {'s':>7s} {'req/s':>10s}  TTFT p50/p99 (s)")
    for router in ("round-robin", "least-loaded"):
        run_plan(plan, prof, a.instances, router)  # warm-up: JIT cache load
        dt, res = _best(lambda: run_plan(plan, prof, a.instances, router), a.repeat)
        ttft = res.first_token - plan.scheduled
        print(f"{'kernel ' + router:28s} {len(plan):9,d} {dt:7.2f} {len(plan) / dt:10,.0f}  "
              f"{np.nanpercentile(ttft, 50):.3f}/{np.nanpercentile(ttft, 99):.3f}")
        m = min(a.baseline_requests, len(plan))
        admit = int(np.ceil(prof.admit_free_fraction * prof.kv_blocks))
        t0 = time.perf_counter()
        simulate_reference(plan.scheduled[:m], plan.input_tokens[:m].astype(np.int64),
                           plan.output_tokens[:m].astype(np.int64), prof.coef_array(), prof.page_size, prof.kv_blocks,
                           prof.max_batch_tokens, min(prof.max_seqs, prof.max_batch_tokens), admit,
                           instances=a.instances, router=router)
        base = time.perf_counter() - t0
        print(f"{'plain Python ' + router:28s} {m:9,d} {base:7.2f} {m / base:10,.0f}  ratio "
              f"{(len(plan) / dt) / (m / base):,.0f}x")
    if a.sessions:
        chat = work / "chat-1h.parquet"
        _trace(chat, data, "--sessions", "chat", "--block-size", "16", "--duration", "1h", "--rate", "20", "--seed", "3")
        table = read_trace(chat)
        for release, reuse in (("open", False), ("closed", True)):
            p = make_plan(table, time_scale=a.time_scale / 8, max_model_len=limit, release=release)
            keys = table.column("session_id").to_numpy().astype(np.int64)[p.row]
            run_plan(p, prof, a.instances, "prefix-aware", keys, reuse=reuse)
            t0 = time.process_time()
            res = run_plan(p, prof, a.instances, "prefix-aware", keys, reuse=reuse)
            dt = time.process_time() - t0
            hit = "-" if res.cached is None else f"{res.cached.sum() / p.input_tokens.sum():.3f}"
            print(f"{'chat ' + release + (' + reuse' if reuse else ''):28s} {len(p):9,d} {dt:7.2f} {len(p) / dt:10,.0f}  "
                  f"TTFT p50 {np.nanpercentile(res.first_token - res.released, 50):.3f} s, hit ratio {hit} (CPU s)")
    if a.fleet_day:
        day = work / "fleet-1M-1d.parquet"
        t0 = time.perf_counter()
        _trace(day, data, "--pool", "language/m-large", "--clients", "1000000", "--duration", "1d", "--seed", "7")
        print(f"fleet day: 10^6 clients, 1 day (generated in {time.perf_counter() - t0:.0f} s); "
              f"{a.fleet_instances} instances round-robin, each way in a fresh process:")
        for how in ("whole", "streamed"):
            subprocess.run([sys.executable, __file__, "--fleet-instances", str(a.fleet_instances), "--fleet-case", how,
                            str(day)], check=True)


def fleet_case(how: str, path: str, instances: int) -> None:
    """One simulation of the fleet-day trace: `whole` (read the table, plan, run) or `streamed`
    (batch by batch, cluster.run_chunks); time and this process's peak RSS."""
    from servegen_fast.io.trace import read_trace
    from servegen_fast.replay.plan import make_plan
    from servegen_fast.simulate.cluster import _plan_chunks, run_chunks, run_plan
    from servegen_fast.simulate.profile import load_profile

    prof = load_profile("cpu-tiny")
    limit = prof.measured_on["max_model_len"]
    run_plan(make_plan(read_trace(path).slice(0, 1000), max_model_len=limit), prof, instances)  # JIT cache load
    t0 = time.perf_counter()
    if how == "whole":
        plan = make_plan(read_trace(path), max_model_len=limit)
        res = run_plan(plan, prof, instances, "round-robin")
    else:
        select = dict(start=None, end=None, clients=None, time_scale=1.0, max_model_len=limit, release="auto")
        plan, res = run_chunks(lambda: _plan_chunks(path, None, select), prof, instances, "round-robin")
    dt = time.perf_counter() - t0
    ttft = res.first_token - plan.scheduled
    print(f"  {how:8s} {len(plan):,d} requests read, planned and simulated in {dt:.1f} s "
          f"({len(plan) / dt:,.0f} req/s); TTFT p50 {np.nanpercentile(ttft, 50):.3f} s, "
          f"p99 {np.nanpercentile(ttft, 99):.3f} s; peak RSS {peak_rss_mib():,.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
