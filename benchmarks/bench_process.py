"""A whole `servegen-fast generate` process (issue 16: "pool, 1 day of m-large to Parquet,
whole process, at least 7 M req/s"): an old tree against this checkout, alternating, each run a
new process timed whole; and with --stages, what each start-up stage costs on its own (run one
after the other in a new process, so nothing overlaps; the best of 3 per stage).

The old tree is an exported commit (`git archive REV | tar -x -C DIR`). Both trees run through
the same launcher, which puts the tree first on sys.path and drops this checkout's
editable-install finder, so only the code differs. Each tree keeps its own Numba and pool caches
(its `.cache/`); one untimed run of each fills them. The traces the two write are compared
(same rows and metadata: `Table.equals`).

    git archive 90325ae | tar -x -C /tmp/old16
    python benchmarks/bench_process.py --old /tmp/old16 [--runs 5] [--stages]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, servegen_root

HERE = Path(__file__).resolve().parent.parent
LAUNCH = ("import sys; root = sys.argv.pop(1); "
          "sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in getattr(f, '__name__', type(f).__name__)]; "
          "sys.path.insert(0, root); ")
# the last exit handler (registered first) prints the time: what follows is the interpreter's teardown
CLI = LAUNCH + ("import atexit, time; atexit.register(lambda: print(f'exit at {time.time()!r}', file=sys.stderr)); "
                "from servegen_fast.cli import main; sys.exit(main())")

# a pool's first load: the ServeGen directory parsed with an empty Numba cache (the parsers' JIT compile: 0 where
# the install built them ahead of time, kernels/textparse_aot.py)
FIRST_LOAD = LAUNCH + """
import time, warnings; warnings.simplefilter("ignore")
t0 = time.perf_counter()
from servegen_fast.io.servegen_format import read_servegen
from servegen_fast.kernels import textparse as tp
t1 = time.perf_counter()
read_servegen(sys.argv[1], sys.argv[2])
t2 = time.perf_counter()
read_servegen(sys.argv[1], sys.argv[2])
t3 = time.perf_counter()
compile = sum(c.metadata["timers"]["compiler_lock"] for f in (tp.parse_trace_csv, tp.parse_dict_literals, tp.segment_cdfs)
              for c in f.overloads.values())
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f} {compile:.3f}")
"""

# the stages of a `generate` run, one after the other, each timed apart
STAGES = LAUNCH + """
import time
t = [time.perf_counter()]
def lap(name):
    now = time.perf_counter(); print(f"{name}\\t{now - t[0]:.4f}"); t[0] = now
import warnings; warnings.simplefilter("ignore")
import servegen_fast.cli as cli
lap("import servegen_fast.cli (numpy, numba, pyarrow)")
argv = sys.argv[1:]
try:
    args = cli.build_parser(argv[0]).parse_args(argv)
except TypeError:  # a tree whose build_parser takes no argument
    args = cli.build_parser().parse_args(argv)
lap("argument parser")
from servegen_fast.io.pool_file import open_pool
from servegen_fast.sample.job import source_for, write
from servegen_fast.cli.generate import _job
lap("import the generate path")
pool = open_pool(args.pool, args.data_dir)
lap("pool load (pool cache)")
from numba.core.registry import cpu_target
cpu_target.typing_context.refresh(); cpu_target.target_context.refresh()
lap("Numba CPU target set-up")
from servegen_fast.sample.generate import generate
for _ in generate(open_pool("builtin"), None, 600, seed=1): pass
lap("first dispatch of the cached kernels (600 s of builtin)")
job = _job(args, lambda: pool.duration)
write(job, source_for(pool, job), args.output)
lap("generate + write the Parquet trace")
"""


def run(cmd, cwd, teardown=None) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    end = time.time()
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    if teardown is not None:
        teardown.append(end - float(p.stderr.rsplit("exit at ", 1)[1]))
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="the old tree (an exported commit)")
    ap.add_argument("--pool", default="language/m-large")
    ap.add_argument("--duration", default="1d")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--stages", action="store_true", help="also time each start-up stage apart")
    ap.add_argument("--first-loads", type=int, default=0,
                    help="also time this many first loads of the pool per tree (empty caches, the parsers compiled)")
    args = ap.parse_args(argv)
    import pyarrow.parquet as pq

    trees = {"old": str(Path(args.old).resolve()), "new": str(HERE)}
    data = str(servegen_root())
    with tempfile.TemporaryDirectory() as tmp:
        def command(tree, script=CLI):
            out = os.path.join(tmp, f"{tree}.parquet")
            return [sys.executable, "-c", script, trees[tree], "generate", "--data-dir", data, "--pool", args.pool,
                    "--duration", args.duration, "--seed", "1", "-o", out, "-q"]

        for tree in trees:  # fill each tree's caches
            run(command(tree), tmp)
        a, b = (pq.read_table(os.path.join(tmp, f"{t}.parquet")) for t in trees)
        rows = a.num_rows
        print(f"machine: {machine()}; {args.pool}, {args.duration}: {rows:,} requests; "
              f"traces equal: {a.equals(b, check_metadata=True)}")
        del a, b
        print(f"load average before: {os.getloadavg()}")
        times, teardown = {t: [] for t in trees}, {t: [] for t in trees}
        for i in range(args.runs):
            for tree in (trees if i % 2 == 0 else list(trees)[::-1]):
                times[tree].append(run(command(tree), tmp, teardown[tree]))
            print(f"run {i + 1}: old {times['old'][-1]:.2f} s, new {times['new'][-1]:.2f} s")
        for tree, s in times.items() if args.runs else ():
            print(f"{tree}: median {statistics.median(s):.2f} s ({rows / statistics.median(s) / 1e6:.2f} M req/s), "
                  f"best {min(s):.2f} s ({rows / min(s) / 1e6:.2f} M req/s); interpreter teardown after the "
              f"exit handlers, median {statistics.median(teardown[tree]):.3f} s")
        if args.runs:
            print(f"new/old speed, median: {statistics.median(times['old']) / statistics.median(times['new']):.2f}x, "
                  f"best: {min(times['old']) / min(times['new']):.2f}x")
        if args.stages:
            start = {t: min(run([sys.executable, "-c", LAUNCH, trees[t]], tmp) for _ in range(3)) for t in trees}
            best = {t: {} for t in trees}
            for _ in range(3):  # alternating; the best of 3 per stage
                for tree in trees:
                    p = subprocess.run(command(tree, STAGES), cwd=tmp, capture_output=True, text=True, check=True)
                    for line in p.stdout.splitlines():
                        name, s = line.split("\t")
                        best[tree][name] = min(float(s), best[tree].get(name, 1e9))
            print(f"\nstages, best of 3 (s)\told\tnew\n  python start\t{start['old']:.3f}\t{start['new']:.3f}")
            for name in best["old"]:
                print(f"  {name}\t{best['old'][name]:.3f}\t{best['new'][name]:.3f}")
        if args.first_loads:
            print("\nfirst load of the pool, new process, empty Numba cache, pool cache off (s):\n"
                  "  tree\timport\tfirst read_servegen\tsecond (parse alone)\tparsers' compile")
            for i in range(args.first_loads):
                for tree in (trees if i % 2 == 0 else list(trees)[::-1]):
                    env = {**os.environ, "NUMBA_CACHE_DIR": tempfile.mkdtemp(dir=tmp), "SERVEGEN_FAST_POOL_CACHE": "off"}
                    p = subprocess.run([sys.executable, "-c", FIRST_LOAD, trees[tree], data, args.pool], env=env,
                                       cwd=tmp, capture_output=True, text=True, check=True)
                    print(f"  {tree}\t" + "\t".join(p.stdout.split()))
        print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
