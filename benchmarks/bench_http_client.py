"""HTTP replay client alone: the highest Poisson request rate it releases with p99 lateness < 1 ms.

The server is the instant fake server (`servegen_fast.testing.fake_server`, its own process,
loopback): each request gets its token events, usage and [DONE] in one write as soon as it
is read. The client is the real path (`replay_http`: token-id prompts built per request,
streamed SSE parsed, results written). For each number of sending processes, the rate is
stepped up; a rate passes when every request is sent (released) and completed and the p99
of release lateness is under 1 ms.

    python benchmarks/bench_http_client.py                       # workers 1 and 2, default rates
    python benchmarks/bench_http_client.py --workers 1 --rates 1000 2000 --duration 5
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


def start_server(max_events: int, uvloop: bool) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "servegen_fast.testing.fake_server", "--port", "0",
                             "--max-events", str(max_events)] + (["--uvloop"] if uvloop else []),
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, line.split()[-1]


def one(url: str, rate: float, duration: float, workers: int, seed: int, loop: str) -> dict:
    from servegen_fast.replay import read_requests
    from servegen_fast.replay.api import replay_http

    trace = poisson_trace(rate, duration, seed)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        s = replay_http(trace, d, target=url, workers=workers, timeout=30.0, concurrency=1024, loop=loop)
        wall = time.perf_counter() - t
        late = read_requests(d).column("lateness").to_numpy()
    c = s["counts"]
    return {"rate": rate, "workers": workers, "loop": s["options"]["loop"], "requests": c["selected"], "sent": c["released"],
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
    p.add_argument("--json", default=None, help="also write the rows to this file")
    a = p.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{a.duration:g} s per rate, fake server max {a.max_events} events"
          f"{' on uvloop' if a.server_uvloop else ''}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    proc, url = start_server(a.max_events, a.server_uvloop)
    rows = []
    try:
        print(f"{'loop':>8} {'workers':>7} {'rate':>7} {'requests':>8} {'sent':>7} {'done':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'max ms':>7} {'>1ms':>6} {'pass':>5}")
        for loop, w in [(lp, w) for lp in a.loop for w in a.workers]:
            for rate in a.rates:
                runs = [one(url, rate, a.duration, w, seed, loop) for seed in range(a.repeat)]
                for r in runs:
                    rows.append(r)
                    print(f"{loop:>8} {w:>7} {rate:>7.0f} {r['requests']:>8} {r['sent']:>7} {r['completed']:>7} "
                          f"{r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['max_ms']:>7.2f} {r['over_1ms']:>6} "
                          f"{'yes' if r['passed'] else 'no':>5}", flush=True)
                if not all(r["passed"] for r in runs):
                    break
            mine = [r for r in rows if r["workers"] == w and r["loop"] == loop]
            best = max((x for x in {r["rate"] for r in mine} if all(r["passed"] for r in mine if r["rate"] == x)),
                       default=None)
            print(f"# {loop}, workers {w}: highest rate passing in every run: {best}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
