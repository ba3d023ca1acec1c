#!/usr/bin/env python
"""Build the builtin synthetic language pool (``servegen_fast/data/builtin.parquet``).

The builtin pool is made by this project: no client's data is copied from ServeGen. The
statistics it is drawn from (how client sizes, activity, diurnal shape, CVs, arrival laws and
length distributions spread in ServeGen's language pools m-large, m-mid and m-small) are kept in
``scripts/builtin_pool/summary.json``; the pool is drawn from them with a fixed seed. See
docs/builtin-pool.md.

    python scripts/derive_builtin_pool.py                       # build from summary.json
    python scripts/derive_builtin_pool.py --data-dir DIR         # recompute the statistics, compare
    python scripts/derive_builtin_pool.py --data-dir DIR --refresh-summary   # and rewrite summary.json

DIR is ServeGen's ``data/`` folder (holding ``language/m-large`` ...). The pool is always built
from the summary file, so the shipped file is a pure function of (summary.json, seed, the code
in scripts/builtin_pool/).
"""
from __future__ import annotations

import argparse
import pprint
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT, HERE):  # run from a source tree without installing; builtin_pool/ sits beside this file
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from builtin_pool.build import build_pool  # noqa: E402
from builtin_pool.design import DEFAULT_SEED  # noqa: E402
from builtin_pool.report import pool_summary, profile_check  # noqa: E402
from builtin_pool.summary import SUMMARY_PATH, differences, load_summary, save_summary  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", help="ServeGen data/ folder (with language/m-large ...): recompute the "
                                       "statistics and compare them with the summary file")
    ap.add_argument("--refresh-summary", action="store_true",
                    help="write the statistics recomputed from --data-dir to the summary file, then build from it")
    ap.add_argument("--summary", default=str(SUMMARY_PATH), help="summary statistics (JSON) to build from")
    ap.add_argument("--out", default=str(ROOT / "servegen_fast" / "data" / "builtin.parquet"))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)
    if args.refresh_summary and not args.data_dir:
        ap.error("--refresh-summary needs --data-dir")
    from servegen_fast.io.pool_file import save_pool

    summary = load_summary(args.summary)
    if args.data_dir:
        from builtin_pool.derive import derive_summary

        t0 = time.perf_counter()
        derived = derive_summary(args.data_dir)
        print(f"# statistics derived from {args.data_dir} in {time.perf_counter() - t0:.1f} s")
        pprint.pprint(derived, sort_dicts=False, width=100, compact=True)
        diff = differences(derived, summary)
        print(f"# derived statistics {'equal' if not diff else 'DIFFER FROM'} {args.summary}")
        for line in diff:
            print(f"#   {line}")
        if args.refresh_summary:
            save_summary(derived, args.summary)
            print(f"# {args.summary} rewritten")
            summary = derived
        elif diff:
            print("# building from the summary file (use --refresh-summary to adopt the derived statistics)")
    else:
        print(f"# statistics used ({args.summary}):")
        pprint.pprint(summary, sort_dicts=False, width=100, compact=True)
    t0 = time.perf_counter()
    pool = build_pool(summary, args.seed)
    t1 = time.perf_counter()
    path = save_pool(pool, args.out)
    print(f"# built in {t1 - t0:.1f} s; wrote {path} ({path.stat().st_size / 1e6:.3f} MB), seed {args.seed}")
    print("# builtin pool summary:")
    pprint.pprint(pool_summary(pool), sort_dicts=False, width=100)
    pprint.pprint(profile_check(pool, summary), sort_dicts=False, width=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
