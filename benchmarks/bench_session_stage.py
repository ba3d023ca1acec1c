"""The session stage alone: CPU time of `SessionExpander.process` (roles, later turns, sort,
merge with the first turns and the carry), replayed on the chunks of one generation run, and
where it goes (cProfile of one replay). Sessions-off generation of the same span is timed too,
as the baseline that the stage adds to.

The chunks are recorded once (their columns and the carry each call started from), then the
calls are replayed `--repeat` times and the least total is kept: the host's load moves whole
runs by ±40%, a replay of identical calls much less. Run it from an exported copy of another
commit (PYTHONPATH) to compare two versions of the stage, alternating.

    python benchmarks/bench_session_stage.py [--duration 21600] [--rate 200] [--repeat 7] [--all]

`--all` replays the look-back's calls too (before time 0: emit=False); by default only the
chunks of the span itself.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

from _common import machine, servegen_root  # noqa: F401 (servegen_root: the data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=21600)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--sessions", default="chat")
    ap.add_argument("--all", action="store_true")
    args = ap.parse_args()
    from servegen_fast.io.pool_file import open_pool
    from servegen_fast.model.sessions import load_profiles
    from servegen_fast.sample import sessions as S
    from servegen_fast.sample.generate import generate

    pool, prof = open_pool("builtin"), load_profiles(args.sessions)
    calls, orig = [], S.SessionExpander.process

    def spy(self, *a, **kw):
        calls.append((self, self.carry, a, kw))
        return orig(self, *a, **kw)

    def run(sessions):
        return sum(b.num_rows for b in generate(pool, args.rate, args.duration, seed=1, sessions=sessions))

    run(None)
    off = float("inf")
    for _ in range(args.repeat):
        c0 = time.process_time()
        n_off = run(None)
        off = min(off, time.process_time() - c0)
    S.SessionExpander.process = spy
    n_on = run(prof)
    S.SessionExpander.process = orig
    if not args.all:
        calls = [c for c in calls if c[3].get("emit", True)]
    slots = sum(len(c[2][0]["timestamp"]) for c in calls)

    def replay():
        for self, carry, a, kw in calls:  # process() only reads its inputs, bar idempotent first inputs
            self.carry = carry
            orig(self, *a, **kw)

    replay()
    best = float("inf")
    for _ in range(args.repeat):
        c0 = time.process_time()
        replay()
        best = min(best, time.process_time() - c0)
    print(f"machine: {machine()}")
    print(f"pool builtin, {args.duration} s at {args.rate:g} req/s, profile {args.sessions!r}, best of {args.repeat}")
    print(f"sessions off, whole generation: {n_off:,} rows, CPU {off:.3f} s")
    print(f"session stage ({len(calls)} calls{', look-back included' if args.all else ''}): {slots:,} slots "
          f"-> {n_on:,} rows in the trace, CPU {best:.3f} s ({best / off:.2f}x the sessions-off generation)")
    pr = cProfile.Profile()
    pr.runcall(replay)
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(10)
    print(out.getvalue().split("\n\n", 2)[-1].rstrip())


if __name__ == "__main__":
    main()
