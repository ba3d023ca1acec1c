"""Cold start: the README's main job with an empty Numba cache, then again warm, and a ServeGen
pool load through the compat API in new processes: the first parses the directory (with the text
parsers the install built, kernels/textparse_aot.py; else compiling them) and keeps the pool
(io/pool_cache.py); each later one reads the kept pool, alternating with a process that parses
again (pool cache off), the baseline.

Each run is a new process timed whole (`python -c ...` / the CLI). The empty cache is a fresh
NUMBA_CACHE_DIR (numba's own folder layout; kernels/config.py steps aside when it is set), so
the checkout's cache is left alone; the pool cache is a fresh folder too.

    python benchmarks/bench_cold.py [--pool language/m-large] [--loads 5]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _common import machine, servegen_root

LOAD = ("import sys, time, warnings; warnings.simplefilter('ignore'); t = time.perf_counter(); "
        "from servegen_fast.compat import Category, ClientPool; "
        "ClientPool(Category[sys.argv[1].split('/')[0].upper()], sys.argv[1].split('/')[1], base_dir=sys.argv[2]); "
        "print(round(time.perf_counter() - t, 2))")


def timed(cmd, env, cwd) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    return time.perf_counter() - t, p.stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="language/m-large")
    ap.add_argument("--loads", type=int, default=5)
    args = ap.parse_args(argv)
    root = str(servegen_root())
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NUMBA_CACHE_DIR": os.path.join(tmp, "numba"),
               "SERVEGEN_FAST_POOL_CACHE": os.path.join(tmp, "pools")}  # both caches start empty
        job = [sys.executable, "-m", "servegen_fast.cli", "generate", "--pool", "builtin", "--duration", "1d",
               "--output", "t.parquet", "-q"]
        for label in ("README job, empty cache", "README job, warm"):
            s, _ = timed(job, env, tmp)
            os.remove(os.path.join(tmp, "t.parquet"))
            print(f"{label:32s} {s:6.1f} s")
        # process 1 parses; later ones read the kept pool file,
        # alternating with a parse in a new process (pool cache off) as the baseline
        for i in range(args.loads):
            s, inner = timed([sys.executable, "-c", LOAD, args.pool, root], env, tmp)
            print(f"{f'pool load {args.pool}, process {i + 1}':32s} {s:6.2f} s (from import: {inner} s)")
            if i:
                s, inner = timed([sys.executable, "-c", LOAD, args.pool, root], {**env, "SERVEGEN_FAST_POOL_CACHE": "off"},
                                 tmp)
                print(f"{'  the same, pool cache off':32s} {s:6.2f} s (from import: {inner} s)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
