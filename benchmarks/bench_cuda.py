"""CUDA backend speed: in-device kernel rate, and end-to-end traces versus backend="cpu".

1. Kernels (device arrays only, no host copies): synthetic chunks of units (one client
   window each) run count_renewal + fill_arrivals (renewal) or fill_arrivals (servegen),
   the per-window stable ordering (device bucket sort, windows of --window-rows arrivals),
   fill_base and the gather into time order, with a warm-up launch first and
   cuda.synchronize() around every timed step, until --total requests are generated.
2. End to end: generate() with backend cuda and cpu, in memory and written with
   servegen_fast.io.trace.write_trace to zstd Parquet and Arrow IPC: the built-in pool at a
   constant rate, or a ServeGen pool (--data-dir, --pool, --native for its own rates).

    python benchmarks/bench_cuda.py                    # on a machine with an NVIDIA GPU
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_cuda.py --dry-run   # parse + tiny run
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    from _common import machine
except ImportError:  # run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine


def _sync(cuda):
    cuda.synchronize()


def kernel_rate(total: int, chunk: int, per_unit: int, window_rows: int, mode: str) -> dict:
    """Requests per second of the device kernels on synthetic chunks (device-resident data)."""
    from numba import cuda

    from servegen_fast.kernels import cuda as kc
    from servegen_fast.model.fields import LAW_GAMMA

    rng = np.random.default_rng(0)
    n_units = max(1, chunk // per_unit)
    units_per_window = max(1, window_rows // per_unit)
    tpb = kc.THREADS_PER_BLOCK
    seed = np.uint64(12345)
    # unit arrays: Gamma law, cv ~ 1.5, rate so that a window of 600 s holds ~per_unit arrivals
    law = cuda.to_device(np.full(n_units, LAW_GAMMA, np.int64))
    k = cuda.to_device(np.full(n_units, 1.0 / 1.5 ** 2))
    length = cuda.to_device(np.full(n_units, 600.0))
    scale = cuda.to_device(np.full(n_units, 600.0 / per_unit / (1.0 / 1.5 ** 2)))
    window_h = (np.arange(n_units) // units_per_window).astype(np.uint32)
    window = cuda.to_device(window_h)
    start = cuda.to_device(window_h.astype(np.float64) * 600.0)
    below = cuda.to_device(np.nextafter(window_h.astype(np.float64) * 600.0 + 600.0, -np.inf))
    # a shared length distribution pair (input, output) with a guide table
    from servegen_fast.model.distributions import DistTableBuilder
    b = DistTableBuilder()
    d_in = b.add(np.arange(1, 2001, dtype=np.float64), rng.uniform(0.1, 1.0, 2000))
    d_out = b.add(np.arange(1, 501, dtype=np.float64), rng.uniform(0.1, 1.0, 500))
    table = b.build()
    guide, goff = table.guide()
    dist = cuda.to_device(np.tile(np.array([d_in, d_out], np.int64), (n_units, 1)))
    dev_tab = [cuda.to_device(np.ascontiguousarray(a)) for a in (table.values, table.cdf, table.offsets, guide, goff)]
    counts_d = cuda.device_array(n_units, np.int64)

    timings = {"count": 0.0, "arrivals": 0.0, "order": 0.0, "base": 0.0, "gather": 0.0}
    done = 0
    c = 0
    warm = True
    while done < total:
        client = cuda.to_device(np.arange(n_units, dtype=np.uint32) + np.uint32(c * n_units))
        t0 = time.perf_counter()
        if mode == "servegen":
            counts = np.full(n_units, per_unit, np.int64)
        else:
            kc._count_renewal_k[kc._blocks(n_units), tpb](seed, client, window, length, law, k, scale, counts_d)
            _sync(cuda)
            counts = counts_d.copy_to_host()
        t1 = time.perf_counter()
        offsets_h = np.zeros(n_units + 1, np.int64)
        np.cumsum(counts, out=offsets_h[1:])
        n = int(offsets_h[-1])
        offsets = cuda.to_device(offsets_h)
        out_t = cuda.device_array(max(n, 1), np.float64)
        _sync(cuda)
        t2 = time.perf_counter()
        kc._fill_arrivals_k[kc._blocks(n_units), tpb](0 if mode == "servegen" else 1, seed, client, window, start,
                                                      length, below, law, k, scale, offsets, out_t)
        _sync(cuda)
        t3 = time.perf_counter()
        bounds = cuda.to_device(offsets_h[np.append(np.arange(0, n_units, units_per_window), n_units)])
        _sync(cuda)
        t4 = time.perf_counter()
        perm = kc._order(out_t, bounds, len(bounds) - 1)
        _sync(cuda)
        t5 = time.perf_counter()
        vals = cuda.device_array((max(n, 1), 2), np.float64)
        _sync(cuda)
        t6 = time.perf_counter()
        kc._fill_base_k[kc._blocks(n), tpb](0, 1.0, 0.0, seed, offsets, client, window, dist, *dev_tab, vals)
        _sync(cuda)
        t7 = time.perf_counter()
        ts, cid = cuda.device_array(n, np.float64), cuda.device_array(n, np.uint32)
        out, unit = cuda.device_array((2, n), np.float64), cuda.device_array(1, np.int64)
        _sync(cuda)
        t8 = time.perf_counter()
        kc._gather_ordered_k[kc._blocks(n), tpb](perm, offsets, client, out_t, vals, 2, ts, cid, out, unit, False)
        _sync(cuda)
        t9 = time.perf_counter()
        if warm:  # first chunk compiles and warms up: not timed
            warm = False
            continue
        timings["count"] += t1 - t0
        timings["arrivals"] += t3 - t2
        timings["order"] += t5 - t4
        timings["base"] += t7 - t6
        timings["gather"] += t9 - t8
        done += n
        c += 1
    total_s = sum(timings.values())
    return {"mode": mode, "requests": done, "chunks": c, "chunk_units": n_units, "window_rows": units_per_window *
            per_unit, "seconds": {k_: round(v, 4) for k_, v in timings.items()}, "total_s": round(total_s, 4),
            "req_per_s": done / total_s if total_s else math.inf,
            "req_per_s_per_step": {k_: (done / v if v else math.inf) for k_, v in timings.items()}}


def end_to_end(backend: str, sink: str, rate, duration: int, start: int, data_dir=None, pool_name="builtin",
               chunk_bytes=256 << 20) -> dict:
    from servegen_fast.sample.generate import generate
    from servegen_fast.io.pool_file import open_pool
    from servegen_fast.io.trace import trace_schema, write_trace

    pool = open_pool(pool_name, data_dir=data_dir) if data_dir else open_pool(pool_name)
    # warm-up (JIT / kernel compile) on a tiny span
    for _ in generate(pool, None if rate is None else 0.05, 600, start=start, backend=backend):
        pass
    t0 = time.perf_counter()
    rows = 0
    if sink == "memory":
        for b in generate(pool, rate, duration, start=start, backend=backend,
                           chunk_bytes=chunk_bytes):
            rows += b.num_rows
        size = 0
    else:
        schema = trace_schema(pool.category, pool.fields, False, None)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ("trace.parquet" if sink == "parquet" else "trace.arrow")

            def count(b):
                nonlocal rows
                rows += b.num_rows
            write_trace(generate(pool, rate, duration, start=start, backend=backend, chunk_bytes=chunk_bytes),
                        path, schema, fmt=sink,
                        on_batch=count)
            size = path.stat().st_size
    s = time.perf_counter() - t0
    return {"backend": backend, "sink": sink, "rows": rows, "seconds": round(s, 3), "rows_per_s": rows / s,
            "bytes": size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total", type=float, default=1e9, help="requests generated by the kernel benchmark")
    ap.add_argument("--chunk", type=float, default=5e7, help="requests per device chunk")
    ap.add_argument("--per-unit", type=int, default=64, help="arrivals per unit (client window)")
    ap.add_argument("--window-rows", type=int, default=4096, help="arrivals per window for the ordering step")
    ap.add_argument("--rate", type=float, default=200.0, help="end-to-end constant rate, requests/s")
    ap.add_argument("--duration", type=int, default=3600, help="end-to-end span, seconds")
    ap.add_argument("--start", type=int, default=86400, help="end-to-end span start in the built-in pool")
    ap.add_argument("--data-dir", help="ServeGen data directory for --pool (default: the built-in pool)")
    ap.add_argument("--pool", default="builtin", help="pool for the end-to-end runs, e.g. language/m-mid")
    ap.add_argument("--native", action="store_true", help="end to end at the pool's own rates (ignores --rate)")
    ap.add_argument("--chunk-mib", type=int, default=1024, help="generate()'s chunk budget for the end-to-end runs")
    ap.add_argument("--backends", default="cuda,cpu", help="end-to-end backends, comma-separated")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes (works under NUMBA_ENABLE_CUDASIM=1)")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.total, args.chunk, args.per_unit, args.window_rows = 300, 150, 8, 32
        args.rate, args.duration = 0.1, 600

    from servegen_fast.sample.backend import load_backend
    kc = load_backend("cuda").kernels  # RuntimeError with a clear message when there is no GPU
    print(f"device: {kc.device_name()}  (threads/block {kc.THREADS_PER_BLOCK})")
    print(f"host:   {machine()}")
    results = {"device": kc.device_name(), "host": machine(), "kernels": [], "end_to_end": []}
    for mode in ("servegen", "renewal"):
        r = kernel_rate(int(args.total), int(args.chunk), args.per_unit, args.window_rows, mode)
        results["kernels"].append(r)
        print(f"kernels {mode:9s}: {r['requests']:.3g} requests in {r['total_s']:.3f} s device time = "
              f"{r['req_per_s']:.3g} req/s  steps {r['seconds']}")
    if not args.skip_e2e:
        for sink in ("memory", "parquet", "arrow"):
            for backend in args.backends.split(","):
                r = end_to_end(backend, sink, None if args.native else args.rate, args.duration, args.start,
                               args.data_dir, args.pool, args.chunk_mib << 20)
                results["end_to_end"].append(r)
                print(f"e2e {sink:8s} {backend:5s}: {r['rows']} rows in {r['seconds']} s = "
                      f"{r['rows_per_s']:.3g} rows/s")
    print(json.dumps(results, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
