"""Parquet encodings of a trace: seconds to write and bytes per request, and whether DuckDB,
Polars and pandas read each file back (row count and timestamp sum checked).

The trace is generated once in memory (builtin pool, 1 day at native rates, seed 1); each
variant writes the same rows with the writer's row groups (io/sink.py ROW_GROUP_ROWS). The
first row is the writer's current default (zstd level 3, no dictionary, timestamp float64
PLAIN), the baseline of the ratios.

    python benchmarks/bench_encodings.py [--hours 24] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from _common import machine

from servegen_fast.io.pool_file import open_pool
from servegen_fast.io.sink import ROW_GROUP_ROWS
from servegen_fast.sample.generate import generate_table

BASE = dict(compression="zstd", use_dictionary=False, write_statistics=["timestamp", "client_id"])


def micros(table: pa.Table) -> pa.Table:
    """timestamp as int64 microseconds (rounded) instead of float64 seconds."""
    us = pc.cast(pc.round(pc.multiply(table["timestamp"], 1e6)), pa.int64())
    return table.set_column(0, pa.field("timestamp", pa.int64()), us)


VARIANTS = {
    "default: zstd 3, float64 PLAIN": (None, {}),
    "zstd 1": (None, dict(compression_level=1)),
    "zstd 6": (None, dict(compression_level=6)),
    "timestamp BYTE_STREAM_SPLIT": (None, dict(column_encoding={"timestamp": "BYTE_STREAM_SPLIT"})),
    "BYTE_STREAM_SPLIT all floats/ints": (None, dict(use_byte_stream_split=True)),
    "client_id dictionary": (None, dict(use_dictionary=["client_id"])),
    "timestamp int64 us, DELTA_BINARY_PACKED": (micros, dict(column_encoding={"timestamp": "DELTA_BINARY_PACKED"})),
    "int64 us DELTA + client_id dictionary": (micros, dict(column_encoding={"timestamp": "DELTA_BINARY_PACKED"},
                                                            use_dictionary=["client_id"])),
    "int64 us DELTA, all ints DELTA": (micros, dict(column_encoding={"timestamp": "DELTA_BINARY_PACKED",
                                                                     "client_id": "DELTA_BINARY_PACKED",
                                                                     "input_tokens": "DELTA_BINARY_PACKED",
                                                                     "output_tokens": "DELTA_BINARY_PACKED"})),
}


def readers(path: str, n: int, ts_sum: float, us: bool) -> str:
    out = []
    try:
        import duckdb
        r = duckdb.sql(f"select count(*), sum(timestamp) from read_parquet('{path}')").fetchall()[0]
        out.append("duckdb ok" if r[0] == n and _close(r[1], ts_sum, us) else f"duckdb MISMATCH {r}")
    except Exception as e:  # noqa: BLE001 (report any reader failure)
        out.append(f"duckdb FAIL {type(e).__name__}")
    try:
        import polars as pl
        df = pl.read_parquet(path)
        out.append("polars ok" if df.height == n and _close(float(df["timestamp"].sum()), ts_sum, us)
                   else "polars MISMATCH")
    except Exception as e:  # noqa: BLE001
        out.append(f"polars FAIL {type(e).__name__}")
    try:
        import pandas as pd
        df = pd.read_parquet(path)
        out.append("pandas ok" if len(df) == n and _close(float(df["timestamp"].sum()), ts_sum, us)
                   else "pandas MISMATCH")
    except Exception as e:  # noqa: BLE001
        out.append(f"pandas FAIL {type(e).__name__}")
    return ", ".join(out)


def _close(got, want, us):
    got = float(got) / (1e6 if us else 1.0)
    return abs(got - want) <= 1e-6 * abs(want) + 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    table = generate_table(open_pool("builtin"), rate=None, duration=args.hours * 3600, seed=1).combine_chunks()
    n = table.num_rows
    ts_sum = float(np.sum(table["timestamp"].to_numpy()))
    print(f"machine: {machine()}\n{n:,} requests (builtin pool, {args.hours} h native, seed 1); "
          f"row groups of {ROW_GROUP_ROWS:,}; best of {args.repeat}")
    print(f"{'variant':42s} {'s':>6s} {'M req/s':>8s} {'B/req':>6s} {'size':>6s} {'speed':>6s}  readers")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, (transform, opts) in VARIANTS.items():
            t = transform(table) if transform else table
            path = os.path.join(tmp, "t.parquet")
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                with pq.ParquetWriter(path, t.schema, **{**BASE, **opts}) as w:
                    for off in range(0, n, ROW_GROUP_ROWS):
                        w.write_table(t.slice(off, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                best = min(best, time.perf_counter() - t0)
            size = os.path.getsize(path)
            base = base or (size, best)
            print(f"{name:42s} {best:6.2f} {n / best / 1e6:8.2f} {size / n:6.2f} {size / base[0]:6.2f} "
                  f"{base[1] / best:6.2f}  {readers(path, n, ts_sum, transform is micros)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
