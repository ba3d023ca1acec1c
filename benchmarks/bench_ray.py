"""Ray scale-out on one machine: generation on a local two-node cluster vs one process, and the
HTTP sender from 2 actors vs 1 process, in one run.

Generation: the same partitioned job (builtin pool, hourly partitions) written (a) by one
process (`sample.job.write`, numba on every core), (b) by one process with one numba thread
(the per-partition cost of one CPU), and (c) by `generate_on_ray` on a LocalCluster of two
`ray start` nodes with one CPU each; the files of (c) are checked equal to (a). Overhead per
partition = (Ray wall - ideal) * nodes / partitions, ideal = partitions * (b's per-partition
time) / nodes.

Sender: Poisson traces of 100 clients against the instant fake server (its own process), at
rising rates; a rate passes when every request completes and p99 release lateness < 1 ms.
One process (`replay_http`) vs `RaySend(workers=2)` on the same cluster.

    python benchmarks/bench_ray.py                     # both parts
    python benchmarks/bench_ray.py --skip-sender --hours 8 --rate 40
    python benchmarks/bench_ray.py --address HEAD:6379 --skip-generation   # a real cluster's nodes
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from bench_http_client import poisson_trace, start_server  # noqa: E402


def generation(a, address: str) -> None:
    import numba

    from servegen_fast.distributed import generate_on_ray
    from servegen_fast.io.pool_file import open_pool
    from servegen_fast.model import rates as R
    from servegen_fast.sample.job import Job, source_for, write

    job = Job(pool_name="builtin", start=0, duration=a.hours * 3600, rate=R.Constant(a.rate), seed=1)
    source = source_for(open_pool("builtin"), job)
    with tempfile.TemporaryDirectory() as d:
        write(job, source, Path(d) / "warm", partition="hour", only=[0])  # JIT compiled before timing
        t = time.perf_counter()
        one = write(job, source, Path(d) / "one", partition="hour")
        t_one = time.perf_counter() - t
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        t = time.perf_counter()
        write(job, source, Path(d) / "one1", partition="hour")
        t_one1 = time.perf_counter() - t
        numba.set_num_threads(threads)
        generate_on_ray(job, Path(d) / "warm-ray", partition="hour", only=[0, 1], address=address,
                        source=source)  # workers started and compiled before timing
        t = time.perf_counter()
        generate_on_ray(job, Path(d) / "ray", partition="hour", address=address, source=source)
        t_ray = time.perf_counter() - t
        same = all((Path(d) / "one" / f.name).read_bytes() == f.read_bytes() for f in (Path(d) / "ray").iterdir())
    parts, nodes = a.hours, 2
    ideal = parts * (t_one1 / parts) / nodes
    print(f"# generation: builtin pool, {a.hours} h at {a.rate:g} req/s = {one.rows:,} requests, "
          f"{parts} hourly partitions")
    print(f"one process, {threads} numba threads: {t_one:6.2f} s  ({one.rows / t_one / 1e6:.2f} M req/s)")
    print(f"one process, 1 numba thread:  {t_one1:6.2f} s  ({t_one1 / parts * 1e3:.0f} ms per partition)")
    print(f"Ray, 2 nodes x 1 CPU:         {t_ray:6.2f} s  ({one.rows / t_ray / 1e6:.2f} M req/s); "
          f"files identical: {same}")
    print(f"ratio one process / Ray: {t_one / t_ray:.2f}; 1-thread process / Ray: {t_one1 / t_ray:.2f} "
          f"(ideal {nodes}); overhead per partition {(t_ray - ideal) * nodes / parts * 1e3:.0f} ms")


def one_send(url: str, rate: float, duration: float, send) -> dict:
    from servegen_fast.replay import read_requests
    from servegen_fast.replay.api import replay_http

    trace = poisson_trace(rate, duration)
    with tempfile.TemporaryDirectory() as d:
        s = replay_http(trace, d, target=url, timeout=30.0, concurrency=1024, send=send)
        late = read_requests(d).column("lateness").to_numpy()
    c = s["counts"]
    p99 = float(np.percentile(late[np.isfinite(late)], 99)) if np.isfinite(late).any() else float("inf")
    return {"p99_ms": p99 * 1e3, "passed": bool(c["released"] == c["selected"] == c["completed"] and p99 < 1e-3)}


def sender(a, address: str) -> None:
    from servegen_fast.distributed import RaySend

    proc, url = start_server(4, True)
    try:
        print(f"# sender: Poisson, 100 clients, {a.duration:g} s per rate, fake server on uvloop; "
              f"pass = all completed and p99 lateness < 1 ms")
        for name, send in (("1 process", None), ("2 Ray actors", RaySend(address, workers=2))):
            best, failed = None, False
            for rate in a.rates:
                r = one_send(url, rate, a.duration, send)
                print(f"{name:>13} {rate:>7.0f} req/s  p99 lateness {r['p99_ms']:7.3f} ms  "
                      f"{'pass' if r['passed'] else 'FAIL'}", flush=True)
                failed = failed or not r["passed"]  # every rate is run: p99 side by side
                if not failed:
                    best = rate
            print(f"# {name}: highest passing rate {best}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=int, default=8, help="trace hours (= partitions)")
    p.add_argument("--rate", type=float, default=40.0, help="aggregate req/s of the generated trace")
    p.add_argument("--rates", type=float, nargs="+", default=[1000, 2000, 3000, 4000, 5000, 6000])
    p.add_argument("--duration", type=float, default=5.0, help="seconds of trace per sender rate")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (HOST:PORT) instead of the local two-node one")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--skip-sender", action="store_true")
    a = p.parse_args(argv)
    import ray

    from servegen_fast.distributed.local_cluster import LocalCluster

    print(f"# {machine()}, {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}")
    cluster = None
    if a.address is None:
        os.environ["RAY_AUTH_MODE"] = "disabled"  # the loopback cluster's mode
        cluster = LocalCluster(nodes=2, cpus=1).start()
    address = a.address or cluster.address
    try:
        ray.init(address=address, log_to_driver=False)
        if not a.skip_generation:
            generation(a, address)
        if not a.skip_sender:
            sender(a, address)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
