"""The arrival kernels alone, old and new code paths alternating in one process (same chunks).

Captures the kernel arguments of real chunks (the builtin pool's day at native rates in
servegen mode; 10^6 synthesized clients at 1,000 req/s in renewal mode), then times, round
after round:

* pool: `fill_arrivals` on arrival stream 1 (two Philox blocks per Gamma attempt, a third for
  the shape < 1 boost) against stream 2 (one block per attempt);
* fleet: the old two walks (`count_renewal`, then `fill_arrivals` drawing every unit again)
  against one walk (`renewal_arrivals`, then `fill_arrivals` copying what it kept), on
  stream 1 (same bytes: checked) and on stream 2.

Reported: the median ns per request of each path over the rounds and its ratio to the old
path. Alternating rounds share the host's load, so the ratio is the steady figure.

    python benchmarks/bench_arrivals.py --rounds 7
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from _common import machine

import servegen_fast.kernels.cpu as K
from servegen_fast.io.pool_file import open_pool
from servegen_fast.kernels.codes import LAW_STREAM2, MODE_RENEWAL
from servegen_fast.model import population as P
from servegen_fast.sample.generate import generate


def capture(name, pool, chunks, **kw):
    """The arguments of the first `chunks` calls of kernel `name` while generating."""
    got, real = [], getattr(K, name)

    def spy(*a):
        got.append(tuple(np.copy(x) if isinstance(x, np.ndarray) else x for x in a))
        return real(*a)
    setattr(K, name, spy)
    try:
        for _ in generate(pool, backend="cpu", **kw):
            if len(got) >= chunks:
                break
    finally:
        setattr(K, name, real)
    return got


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def pool_paths(chunks):
    """fill_arrivals (servegen mode) on stream 1 laws and on stream 2 laws."""
    def run(stream):
        def go():
            for a in chunks:
                law = a[6] % LAW_STREAM2 + (LAW_STREAM2 if stream == 2 else 0)
                K.fill_arrivals(*a[:6], law, *a[7:10], np.empty_like(a[10]))
        return go
    return {"stream 1 (old)": run(1), "stream 2": run(2)}


def fleet_paths(chunks):
    """(seed, client, window, start, length, law, k, scale, room_off) of renewal_arrivals calls."""
    def law_of(a, stream):
        return a[5] % LAW_STREAM2 + (LAW_STREAM2 if stream == 2 else 0)

    def two_walks(stream):
        def go():
            for a in chunks:
                seed, client, window, start, length, _, k, scale, _ = a
                law = law_of(a, stream)
                counts = K.count_renewal(seed, client, window, length, law, k, scale)
                off = np.zeros(len(counts) + 1, np.int64)
                np.cumsum(counts, out=off[1:])
                K.fill_arrivals(MODE_RENEWAL, seed, client, window, start, length, law, k, scale, off,
                                np.empty(off[-1]))
        return go

    def one_walk(stream):
        def go():
            for a in chunks:
                seed, client, window, start, length, _, k, scale, room_off = a
                law = law_of(a, stream)
                counts, first = K.renewal_arrivals(seed, client, window, start, length, law, k, scale, room_off)
                off = np.zeros(len(counts) + 1, np.int64)
                np.cumsum(counts, out=off[1:])
                K.fill_arrivals(MODE_RENEWAL, seed, client, window, start, length, law, k, scale, off,
                                np.empty(off[-1]), room_off, first)
        return go
    return {"two walks, stream 1 (old)": two_walks(1), "one walk, stream 1": one_walk(1),
            "one walk, stream 2": one_walk(2)}


def same_bytes(chunks):
    """One walk gives the two walks' times (stream 1): the speed-up keeps the trace."""
    for a in chunks[:2]:
        seed, client, window, start, length, law, k, scale, room_off = a
        law = law % LAW_STREAM2
        counts = K.count_renewal(seed, client, window, length, law, k, scale)
        off = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=off[1:])
        want, got = np.empty(off[-1]), np.empty(off[-1])
        K.fill_arrivals(MODE_RENEWAL, seed, client, window, start, length, law, k, scale, off, want)
        c2, first = K.renewal_arrivals(seed, client, window, start, length, law, k, scale, room_off)
        K.fill_arrivals(MODE_RENEWAL, seed, client, window, start, length, law, k, scale, off, got, room_off, first)
        assert np.array_equal(c2, counts) and np.array_equal(got.view(np.uint64), want.view(np.uint64))


def report(title, paths, n, rounds):
    for fn in paths.values():  # warm-up (compiles on a cold cache)
        fn()
    times = {k: [] for k in paths}
    for _ in range(rounds):
        for k, fn in paths.items():
            times[k].append(timed(fn))
    base = statistics.median(next(iter(times.values())))
    print(f"\n## {title}: {n:,} requests, {rounds} alternating rounds")
    for k, ts in times.items():
        m = statistics.median(ts)
        print(f"{k:28s} {m / n * 1e9:7.1f} ns/req  (min {min(ts) / n * 1e9:6.1f})  x{base / m:5.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--chunks", type=int, default=4, help="chunks captured per case")
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    base = open_pool("builtin")
    pool = capture("fill_arrivals", base, args.chunks, duration=86400, seed=1, arrival_stream=1)
    report("pool builtin, native rates, servegen mode: fill_arrivals", pool_paths(pool),
           sum(int(a[9][-1]) for a in pool), args.rounds)
    pop = P.synthesize(base, 1_000_000, mean_rate=1000.0, duration=7200, seed=1, mean_over=(0, 7200))
    fleet = capture("renewal_arrivals", pop, args.chunks, duration=7200, seed=1, arrival_stream=1)
    same_bytes(fleet)
    n = sum(int(K.count_renewal(*a[:3], a[4], a[5] % LAW_STREAM2, a[6], a[7]).sum()) for a in fleet)
    report("fleet 10^6 clients, 1,000 req/s, renewal: count + fill", fleet_paths(fleet), n, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
