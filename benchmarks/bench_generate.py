"""Trace generation speed on ServeGen's m-large: in memory and to zstd Parquet / Arrow IPC.

Each case runs in a fresh subprocess (so peak RSS is its own), after a warm-up that loads
the compiled kernels. The baseline is a per-request Python generator written here the way
ServeGen's reference works (NumPy draws per client window, one Python object per request),
run in the same process as the fast path so the ratio is like for like.

    python benchmarks/bench_generate.py                 # all cases
    python benchmarks/bench_generate.py --case day-native-memory
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from _common import machine, peak_rss_mib, servegen_root

CASES = {
    # name: (duration s, rate (None = native), sink)
    "day-native-memory": (86400, None, "memory"),
    "day-native-parquet": (86400, None, "parquet"),
    "day-native-arrow": (86400, None, "arrow"),
    "hour-1000-memory": (3600, 1000.0, "memory"),
    "hour-1000-parquet": (3600, 1000.0, "parquet"),
}


def python_baseline(pool, duration, seed=0):
    """Per-request Python objects, ServeGen style (the baseline; not library code)."""
    from servegen_fast.model.fields import LAW_GAMMA
    rng = np.random.default_rng(seed)
    view = pool.span(0, duration)
    inp, out = view.field_index("input_tokens"), view.field_index("output_tokens")
    requests = []
    for w in range(view.n_windows):
        for c in np.flatnonzero(view.active[:, w]):
            n = math.ceil(view.rate[c, w] * view.window_len[w])
            shape = view.shape[c, w]
            iats = rng.gamma(shape, size=n) if view.law[c, w] == LAW_GAMMA else rng.weibull(shape, size=n)
            ts = np.cumsum(iats) * (view.window_len[w] / iats.sum()) + view.window_start[w]
            ts = ts[ts < view.window_start[w] + view.window_len[w]]
            d = view.length_index[w]
            vi, ci = view.dists.get(view.dist_id[c, d, inp])[0], np.cumsum(view.dists.get(view.dist_id[c, d, inp])[1])
            vo, co = view.dists.get(view.dist_id[c, d, out])[0], np.cumsum(view.dists.get(view.dist_id[c, d, out])[1])
            for t in ts:
                u = rng.random()
                requests.append({"timestamp": float(t), "client_id": int(view.client_ids[c]),
                                 "input_tokens": int(vi[min(np.searchsorted(ci, u), len(vi) - 1)]),
                                 "output_tokens": int(vo[min(np.searchsorted(co, u), len(vo) - 1)])})
    requests.sort(key=lambda r: r["timestamp"])
    return len(requests)


def run_case(name: str, baseline_seconds: int) -> dict:
    import servegen_fast as sf
    from servegen_fast.sample.generate import generate
    from servegen_fast.io.trace import trace_schema, write_trace

    warnings.simplefilter("ignore")
    duration, rate, sink = CASES[name]
    pool = sf.read_servegen(servegen_root(), "language/m-large")
    for _ in generate(pool, rate, 600, seed=1):  # warm-up: load compiled kernels
        pass
    rss_before = peak_rss_mib()
    t = time.perf_counter()
    rows = 0
    size = 0
    if sink == "memory":
        for b in generate(pool, rate, duration, seed=1):
            rows += b.num_rows
    else:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            path = os.path.join(tmp, "trace." + sink)
            schema = trace_schema(pool.category, pool.fields)

            def count(b):
                nonlocal rows
                rows += b.num_rows
            write_trace(generate(pool, rate, duration, seed=1), path, schema, fmt=sink, on_batch=count)
            size = os.path.getsize(path)
    el = time.perf_counter() - t
    result = {"case": name, "requests": rows, "seconds": el, "req_per_s": rows / el,
              "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss_before,
              "bytes_per_request": size / rows if size else None}
    if baseline_seconds:
        tb = time.perf_counter()
        nb = python_baseline(pool, baseline_seconds)
        result["baseline_req_per_s"] = nb / (time.perf_counter() - tb)
        result["speedup"] = result["req_per_s"] / result["baseline_req_per_s"]
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=sorted(CASES))
    ap.add_argument("--baseline-seconds", type=int, default=1800,
                    help="trace seconds the per-request Python baseline generates (0: skip)")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.baseline_seconds)))
        return
    print(f"machine: {machine()}")
    print(f"{'case':22s} {'requests':>12s} {'s':>7s} {'M req/s':>8s} {'peak RSS':>9s} {'B/req':>6s} "
          f"{'baseline req/s':>14s} {'ratio':>6s}")
    for name in CASES:
        base = args.baseline_seconds if name.endswith("memory") else 0
        out = subprocess.run([sys.executable, __file__, "--case", name, "--baseline-seconds", str(base)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        bpr = f"{r['bytes_per_request']:.1f}" if r["bytes_per_request"] else "-"
        bl = f"{r['baseline_req_per_s']:,.0f}" if "baseline_req_per_s" in r else "-"
        ratio = f"{r['speedup']:.0f}x" if "speedup" in r else "-"
        print(f"{name:22s} {r['requests']:12,d} {r['seconds']:7.2f} {r['req_per_s'] / 1e6:8.2f} "
              f"{r['peak_rss_mib']:7.0f}Mi {bpr:>6s} {bl:>14s} {ratio:>6s}", flush=True)


if __name__ == "__main__":
    main()
