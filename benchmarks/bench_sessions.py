"""Generation speed with sessions on vs off, on the same pool, in one process (the ratio is the
claim; issue 13 asks for at least 0.5), plus peak RSS, and the block-id storage choice: a list
column stored in the file vs derived on read (size and time).

Each timed run generates the whole span into memory (Arrow batches, consumed one at a time),
or into a zstd Parquet file, after a warm-up run that loads the compiled kernels; off and on
runs (on: each session stream version of `--streams`, sample/sessions.py) alternate and the
best of `--repeat` of each is kept.

    python benchmarks/bench_sessions.py [--duration 86400] [--rate 200] [--repeat 3] [--streams 1,2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _common import machine, peak_rss_mib, servegen_root  # noqa: F401 (servegen_root: the data)


def timed_runs(fns, repeat):
    """Best wall and CPU (process, all threads) times and rows of each of `fns`, run alternately
    (so a change in the host's load hits all); CPU time is the steadier figure on a shared host."""
    best = [float("inf")] * len(fns)
    cpu = [float("inf")] * len(fns)
    rows = [0] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            rows[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
            cpu[i] = min(cpu[i], time.process_time() - c0)
    return best, rows, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=86400)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sessions", default="chat")
    ap.add_argument("--streams", default="1,2", help="session stream versions to time, e.g. 2 or 1,2")
    args = ap.parse_args()
    streams = [int(v) for v in args.streams.split(",")]
    from servegen_fast.io.blocks import BlockSpec, hash_ids
    from servegen_fast.io.pool_file import open_pool
    from servegen_fast.model.sessions import load_profiles
    from servegen_fast.sample.generate import generate

    pool = open_pool("builtin")
    prof = load_profiles(args.sessions)

    from servegen_fast.io.trace import trace_schema, write_trace

    def run(sessions, sink, stream=2):
        batches = generate(pool, args.rate, args.duration, seed=1, sessions=sessions, session_stream=stream)
        if sink == "memory":
            return sum(b.num_rows for b in batches)
        rows = [0]
        with tempfile.TemporaryDirectory() as d:
            schema = trace_schema(pool.category, pool.fields, sessions=sessions is not None)
            write_trace(batches, os.path.join(d, "t.parquet"), schema, on_batch=lambda b: rows.__setitem__(
                0, rows[0] + b.num_rows))
        return rows[0]

    run(None, "memory"), run(prof, "memory")  # warm-up: compiled kernels loaded
    print(f"machine: {machine()}")
    print(f"pool builtin, {args.duration} s at {args.rate:g} req/s, profile {args.sessions!r}, best of {args.repeat}")
    for sink in ("memory", "parquet"):
        fns = [lambda: run(None, sink)] + [lambda v=v: run(prof, sink, v) for v in streams]
        wall, rows, cpu = timed_runs(fns, args.repeat)
        n_off, t_off, c_off = rows[0], wall[0], cpu[0]
        print(f"{sink:8s} sessions off: {n_off:,} rows in {t_off:.2f} s ({n_off / t_off / 1e6:.2f} M req/s), "
              f"CPU {c_off:.2f} s")
        for v, n_on, t_on, c_on in zip(streams, rows[1:], wall[1:], cpu[1:]):
            print(f"{sink:8s} sessions on, stream {v}: {n_on:,} rows in {t_on:.2f} s ({n_on / t_on / 1e6:.2f} M req/s)"
                  f", CPU {c_on:.2f} s; ratio on/off (req/s) wall {(n_on / t_on) / (n_off / t_off):.2f}, "
                  f"CPU {(n_on / c_on) / (n_off / c_off):.2f}")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")

    # block ids: stored as a list column vs derived on read, on the first hour
    batches = list(generate(pool, args.rate, 3600, seed=1, sessions=prof))
    table = pa.Table.from_batches(batches)
    spec = BlockSpec(1, 512, prof)
    with tempfile.TemporaryDirectory() as d:
        plain, listed = os.path.join(d, "plain.parquet"), os.path.join(d, "list.parquet")
        t0 = time.perf_counter()
        ids = hash_ids(table, spec)
        t_derive = time.perf_counter() - t0
        pq.write_table(table, plain, compression="zstd", use_dictionary=False)
        pq.write_table(table.append_column("hash_ids", ids), listed, compression="zstd", use_dictionary=False)
        t0 = time.perf_counter()
        pq.read_table(listed, columns=["hash_ids"])
        t_read = time.perf_counter() - t0
        s_plain, s_list = os.path.getsize(plain), os.path.getsize(listed)
    blocks = len(ids.values)
    print(f"block ids, first hour: {table.num_rows:,} rows, {blocks:,} blocks ({blocks / table.num_rows:.1f} a row)")
    print(f"  file without ids {s_plain / 2**20:.1f} MiB, with a list column {s_list / 2**20:.1f} MiB "
          f"({s_list / s_plain:.1f}x; {(s_list - s_plain) / table.num_rows:.1f} bytes a row)")
    print(f"  deriving on read {t_derive:.3f} s ({blocks / t_derive / 1e6:.0f} M ids/s); reading the stored "
          f"column {t_read:.3f} s")


if __name__ == "__main__":
    main()
