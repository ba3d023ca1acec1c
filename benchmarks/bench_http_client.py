"""HTTP replay client alone: the highest Poisson request rate it releases with p99 lateness < 1 ms.

The server is the instant fake server (`servegen_fast.testing.fake_server`, its own process,
loopback): each request gets its token events, usage and [DONE] in one write as soon as it
is read. The client is the real path (`replay_http`: token-id prompts built per request,
streamed SSE parsed, results written). For each number of sending processes, the rate is
stepped up; a rate passes when every request is sent (released) and completed and the p99
of release lateness is under 1 ms.

    python benchmarks/bench_http_client.py                       # workers 1 and 2, default rates
    python benchmarks/bench_http_client.py --workers 1 --rates 1000 2000 --duration 5

With `--traces poisson sessions`, each rate is also run on a multi-turn trace (`session_trace`:
sessions of 1-7 turns, think times exponential with mean 0.5 s, contexts growing by the previous
output and 16-128 new tokens, block ids at block size 16), replayed closed-loop: prompts built
from block content ids, each turn released at its previous turn's completion + think time, and
lateness counted from that time. The Poisson trace is the baseline measured in the same run.

    python benchmarks/bench_http_client.py --workers 1 --loop uvloop --rates 5000 --traces poisson sessions --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent


def poisson_trace(rate: float, duration: float, seed: int = 0, input_median: int = 256) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = int(rate * duration)
    ts = np.cumsum(rng.exponential(1.0 / rate, n))
    inp = np.clip(rng.lognormal(np.log(input_median), 0.8, n), 8, 4096).astype(np.uint32)
    return pa.table({"timestamp": ts, "client_id": rng.integers(0, 100, n).astype(np.uint32),
                     "input_tokens": inp, "output_tokens": rng.integers(1, 9, n).astype(np.uint32)})


SESSION_PROFILE = {"format": "servegen-fast-sessions", "version": 1, "source": "bench_http_client",
                   "default": {"session_share": 1.0, "turns": {"values": [4], "probs": [1.0]},
                               "think_time": {"values": [0.5], "probs": [1.0]},
                               "new_tokens": {"values": [64], "probs": [1.0]}, "prefix_share": 0.0,
                               "prefixes": {"tokens": [256], "weights": [1.0]}}}


def session_trace(rate: float, duration: float, seed: int = 0, input_median: int = 256,
                  think_mean: float = 0.5) -> pa.Table:
    """Multi-turn sessions (turns 1-7, mean 4) starting as a Poisson process, about `rate` requests/s
    (sessions start from 8 think-time means before 0, so the trace starts in steady state)."""
    from servegen_fast.io.trace import trace_schema

    rng = np.random.default_rng(seed)
    lead = 8 * think_mean
    m = int(rate * (duration + lead) / 4 * 1.1) + 8
    starts = np.cumsum(rng.exponential(4.0 / rate, m)) - lead
    turns = rng.integers(1, 8, m)
    sid = np.repeat(np.arange(m), turns)
    first = np.concatenate([[0], np.cumsum(turns)[:-1]])
    turn = np.arange(len(sid)) - np.repeat(first, turns)
    think = np.where(turn > 0, rng.exponential(think_mean, len(sid)), 0.0)
    out = rng.integers(1, 9, len(sid))
    new = np.where(turn > 0, rng.integers(16, 129, len(sid)), 0)
    new[turn == 0] = np.clip(rng.lognormal(np.log(input_median), 0.8, m), 8, 4096).astype(np.int64)
    # input_k = input_{k-1} + output_{k-1} + new_k: a per-session cumulative sum
    grow = new + np.where(turn > 0, np.roll(out, 1), 0)
    inp = np.cumsum(grow) - np.repeat(np.cumsum(grow)[first] - grow[first], turns)
    ts = starts[sid] + np.cumsum(think) - np.repeat(np.cumsum(think)[first] - think[first], turns)
    keep = (ts >= 0) & (ts < duration)
    order = np.flatnonzero(keep)[np.argsort(ts[keep], kind="stable")]
    meta = {"seed": seed, "sessions": {"profiles": SESSION_PROFILE, "block_size": 16}}
    schema = trace_schema("language", ("input_tokens", "output_tokens"), metadata=meta, sessions=True)
    return pa.table({"timestamp": ts[order], "client_id": (sid[order] % 100).astype(np.uint32),
                     "input_tokens": inp[order].astype(np.uint32), "output_tokens": out[order].astype(np.uint32),
                     "session_id": sid[order].astype(np.uint64), "turn": turn[order].astype(np.uint16),
                     "think_time": think[order].astype(np.float32),
                     "prefix_id": pa.nulls(len(order), pa.uint32())}, schema=schema)


def start_server(max_events: int, uvloop: bool) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "servegen_fast.testing.fake_server", "--port", "0",
                             "--max-events", str(max_events)] + (["--uvloop"] if uvloop else []),
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, line.split()[-1]


def one(url: str, rate: float, duration: float, workers: int, seed: int, loop: str, kind: str = "poisson") -> dict:
    from servegen_fast.replay import read_requests
    from servegen_fast.replay.api import replay_http

    trace = session_trace(rate, duration, seed) if kind == "sessions" else poisson_trace(rate, duration, seed)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        s = replay_http(trace, d, target=url, workers=workers, timeout=30.0, concurrency=1024, loop=loop)
        wall = time.perf_counter() - t
        late = read_requests(d).column("lateness").to_numpy()
    c = s["counts"]
    return {"trace": kind, "release": s["options"]["release"], "rate": rate, "workers": workers, "loop": s["options"]["loop"], "requests": c["selected"], "sent": c["released"],
            "completed": c["completed"], "p50_ms": float(np.percentile(late, 50) * 1e3),
            "p99_ms": float(np.percentile(late, 99) * 1e3), "max_ms": float(late.max() * 1e3),
            "over_1ms": int((late > 1e-3).sum()), "ttft_p50_ms": s["latency"]["ttft"].get("p50", float("nan")) * 1e3,
            "wall_s": wall,
            "passed": bool(c["released"] == c["selected"] == c["completed"] and np.percentile(late, 99) < 1e-3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rates", type=float, nargs="+", default=[1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000])
    p.add_argument("--duration", type=float, default=10.0, help="seconds of trace per rate")
    p.add_argument("--max-events", type=int, default=4, help="token events per response from the fake server")
    p.add_argument("--repeat", type=int, default=1, help="runs per (workers, rate); a rate passes if all pass")
    p.add_argument("--loop", nargs="+", default=["asyncio", "uvloop"], help="event loops to measure")
    p.add_argument("--server-uvloop", action="store_true", help="run the fake server on uvloop (less of the "
                   "machine's CPU taken by the server)")
    p.add_argument("--traces", nargs="+", choices=("poisson", "sessions"), default=["poisson"],
                   help="poisson (the baseline) and/or sessions (multi-turn, closed loop); default poisson")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    a = p.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{a.duration:g} s per rate, fake server max {a.max_events} events"
          f"{' on uvloop' if a.server_uvloop else ''}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    proc, url = start_server(a.max_events, a.server_uvloop)
    rows = []
    try:
        print(f"{'trace':>8} {'loop':>8} {'workers':>7} {'rate':>7} {'requests':>8} {'sent':>7} {'done':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'max ms':>7} {'>1ms':>6} {'pass':>5}")
        for kind, loop, w in [(k, lp, w) for lp in a.loop for w in a.workers for k in a.traces]:
            for rate in a.rates:
                runs = [one(url, rate, a.duration, w, seed, loop, kind) for seed in range(a.repeat)]
                for r in runs:
                    rows.append(r)
                    print(f"{kind:>8} {loop:>8} {w:>7} {rate:>7.0f} {r['requests']:>8} {r['sent']:>7} {r['completed']:>7} "
                          f"{r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['max_ms']:>7.2f} {r['over_1ms']:>6} "
                          f"{'yes' if r['passed'] else 'no':>5}", flush=True)
                if not all(r["passed"] for r in runs):
                    break
            mine = [r for r in rows if r["workers"] == w and r["loop"] == loop and r["trace"] == kind]
            best = max((x for x in {r["rate"] for r in mine} if all(r["passed"] for r in mine if r["rate"] == x)),
                       default=None)
            print(f"# {kind}, {loop}, workers {w}: highest rate passing in every run: {best}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
