"""Where the time goes: each stage of a generation run, per request and per (client, window) unit.

Wraps the kernels of the chosen backend and the host-side planning functions with timers,
then generates in memory (serially, no writer thread) and times writing the same batches to
zstd Parquet apart. Cases: the pool path (builtin pool or a ServeGen pool at native rates)
and the fleet path (a synthesized population in renewal mode).

    python benchmarks/profile_stages.py                        # pool 1 day + fleet 10^6 clients 2 h
    python benchmarks/profile_stages.py --fleet-hours 24 --skip-pool
"""
from __future__ import annotations

import argparse
import collections
import io
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

from _common import machine, peak_rss_mib

import servegen_fast.sample.generate as G
import servegen_fast.sample.plan as PL
from servegen_fast.io.pool_file import open_pool
from servegen_fast.io.sink import FILE_ENCODING, FILE_ENCODINGS, ROW_GROUP_ROWS
from servegen_fast.model import population as P
from servegen_fast.model import rates as R

KERNELS = ("count_renewal", "renewal_arrivals", "fill_arrivals", "window_order", "fill_base", "fill_rows", "fill_items",
           "gather_rows")
HOST = {G: ("plan_chunks", "chunk_units", "renewal_params", "servegen_counts", "to_batch"),
        R: ("client_targets",)}


class Timers:
    def __init__(self):
        self.s = collections.defaultdict(float)
        self.units = 0

    def wrap(self, owner, name, label=None):
        fn = getattr(owner, name)
        label = label or name

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s[label] += time.perf_counter() - t
        setattr(owner, name, timed)
        return fn

    def wrap_units(self):
        fn = G.chunk_units

        def counted(*a, **k):
            t = time.perf_counter()
            u = fn(*a, **k)
            self.s["chunk_units (planning)"] += time.perf_counter() - t
            self.units += len(u.law)
            return u
        G.chunk_units = counted


def run_case(name, pool, backend, kwargs, timers):
    kern = __import__(f"servegen_fast.kernels.{'cpu' if backend == 'cpu' else 'reference'}", fromlist=["x"])
    saved = [(kern, k, timers.wrap(kern, k, f"kernel {k}")) for k in KERNELS if hasattr(kern, k)]
    saved += [(G, k, timers.wrap(G, k)) for k in HOST[G] if k != "chunk_units"]
    saved.append((G, "chunk_units", G.chunk_units))
    timers.wrap_units()
    t0, c0 = time.perf_counter(), time.process_time()
    batches = list(G.generate(pool, backend=backend, **kwargs))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for owner, k, fn in saved:
        setattr(owner, k, fn)
    n = sum(b.num_rows for b in batches)
    table = pa.Table.from_batches(batches)
    buf = io.BytesIO()
    t1 = time.perf_counter()
    pq.write_table(table, buf, compression="zstd", use_dictionary=False, row_group_size=ROW_GROUP_ROWS,
                   **FILE_ENCODINGS[FILE_ENCODING])
    write_s = time.perf_counter() - t1
    print(f"\n## {name}: {n:,} requests, {timers.units:,} units ({n / max(timers.units, 1):.1f} requests/unit), "
          f"in memory {wall:.2f} s = {n / wall / 1e6:.2f} M req/s, CPU (all threads) {cpu:.2f} s = "
          f"{cpu / n * 1e9:.0f} ns/req; zstd Parquet write (serial, apart) "
          f"{write_s:.2f} s = {buf.tell() / n:.2f} B/req (file encoding {FILE_ENCODING})")
    print(f"{'stage':34s} {'s':>7s} {'share':>6s} {'ns/req':>8s} {'ns/unit':>8s}")
    rows = sorted(timers.s.items(), key=lambda kv: -kv[1])
    rest = wall - sum(timers.s.values())
    for label, s in rows + [("other (host glue, Arrow batches)", rest), ("Parquet write (zstd)", write_s)]:
        print(f"{label:34s} {s:7.3f} {s / wall:6.1%} {s / n * 1e9:8.1f} {s / max(timers.units, 1) * 1e9:8.1f}")
    return n, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="builtin")
    ap.add_argument("--pool-hours", type=int, default=24)
    ap.add_argument("--fleet-clients", type=int, default=1_000_000)
    ap.add_argument("--fleet-hours", type=int, default=2)
    ap.add_argument("--mean-rate", type=float, default=1000.0)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--skip-pool", action="store_true")
    ap.add_argument("--skip-fleet", action="store_true")
    ap.add_argument("--arrival-stream", type=int, choices=(1, 2), default=None,
                    help="the inter-arrival random stream (default: the generator's default)")
    args = ap.parse_args(argv)
    stream = {} if args.arrival_stream is None else {"arrival_stream": args.arrival_stream}
    print(f"machine: {machine()}")
    base = open_pool(args.pool)
    # warm-up: load (or compile) every kernel once, outside the timings
    G.generate_table(base, rate=10.0, duration=1200, seed=1, backend=args.backend)
    G.generate_table(base, rate=10.0, duration=1200, seed=1, backend=args.backend, mode="renewal")
    G.generate_table(P.synthesize(base, 1000, duration=86400, seed=1), duration=1200, seed=1, backend=args.backend)
    if not args.skip_pool:
        run_case(f"pool {args.pool}, {args.pool_hours} h native, servegen mode", base, args.backend,
                 dict(rate=None, duration=args.pool_hours * 3600, seed=1, **stream), Timers())
    if not args.skip_fleet:
        d = args.fleet_hours * 3600
        t = time.perf_counter()
        pop = P.synthesize(base, args.fleet_clients, mean_rate=args.mean_rate, duration=d, seed=1,
                           mean_over=(0, d))
        print(f"\nsynthesize {args.fleet_clients:,} clients: {time.perf_counter() - t:.2f} s")
        run_case(f"fleet {args.fleet_clients:,} clients, {args.fleet_hours} h at {args.mean_rate:g} req/s, renewal",
                 pop, args.backend, dict(rate=None, duration=d, seed=1, **stream), Timers())
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
