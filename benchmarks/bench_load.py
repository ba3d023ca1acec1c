"""Load ServeGen's m-large pool: our reader and pool file vs a ServeGen-style loader.

The baseline is written here the way ServeGen's loader works (json, then `ast.literal_eval`
of every dict literal into dense PDF lists); it runs on the first N clients and its time is
scaled to the whole pool, reported as such.

    python benchmarks/bench_load.py [--pool language/m-large] [--baseline-clients 16]
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import tempfile
import time
import warnings

from _common import machine, servegen_root

import servegen_fast as sf
from servegen_fast.io.pool_file import load_pool_file, save_pool


def servegen_style_load(model_dir, ids):
    clients = {}
    for i in ids:
        ds = os.path.join(model_dir, f"chunk-{i}-dataset.json")
        with open(ds) as f:
            doc = json.load(f)
        dataset = {}
        for ts, fields in doc.items():
            data = {}
            for k, v in fields.items():
                pdf = ast.literal_eval(v)
                if not pdf:
                    break
                if isinstance(next(iter(pdf)), int):
                    pdf = [pdf.get(b, 0.0) for b in range(max(pdf) + 1)]
                else:
                    pdf = list(pdf.values())
                data[k] = pdf
            dataset[int(ts)] = data
        trace = {}
        with open(os.path.join(model_dir, f"chunk-{i}-trace.csv")) as f:
            for line in f:
                t, rate, cv, pat, a, b = line.strip().split(",")
                trace[int(t)] = None if pat == "" else {"rate": float(rate), "cv": float(cv),
                                                        "pat": (pat, (float(a), float(b)))}
        clients[i] = (trace, dataset)
    return clients


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="language/m-large")
    ap.add_argument("--baseline-clients", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = servegen_root()
    warnings.simplefilter("ignore")
    sf.read_servegen(root, "language/m-small")  # load the compiled parsers once
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        pool = sf.read_servegen(root, args.pool)
        times.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pool.parquet")
        save_pool(pool, path)
        ftimes = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            load_pool_file(path)
            ftimes.append(time.perf_counter() - t)
        size = os.path.getsize(path)
    ids = [int(c) for c in pool.client_ids[:args.baseline_clients]]
    t = time.perf_counter()
    servegen_style_load(root / args.pool, ids)
    base = (time.perf_counter() - t) * pool.n_clients / len(ids)
    print(f"machine: {machine()}")
    print(f"pool {args.pool}: {pool.n_clients} clients, {pool.n_windows} windows, {len(pool.dists)} distinct distributions")
    print(f"read_servegen (directory):   best {min(times):.2f} s of {args.repeat}")
    print(f"load_pool_file ({size / 2**20:.1f} MiB):    best {min(ftimes):.3f} s of {args.repeat}")
    print(f"ServeGen-style literal_eval loader: {base:.1f} s (scaled from {len(ids)} clients)")
    print(f"speed-up: directory {base / min(times):.0f}x, pool file {base / min(ftimes):.0f}x")


if __name__ == "__main__":
    main()
