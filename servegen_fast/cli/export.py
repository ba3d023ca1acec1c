"""`servegen-fast export`: a trace -> Mooncake JSONL, vLLM custom-dataset JSONL or BurstGPT CSV."""
from __future__ import annotations

import sys
import time


def add_arguments(sub) -> None:
    from ..io.export import FORMATS

    e = sub.add_parser("export", help="export a trace to Mooncake JSONL, vLLM custom JSONL or BurstGPT CSV",
                       description="Stream a trace into a format other tools replay (docs/sessions.md, Export). "
                                   "Block ids (Mooncake hash_ids) are derived from traces made with --sessions.")
    e.add_argument("trace", help="trace file or partitioned directory")
    e.add_argument("--to", required=True, choices=FORMATS, help="output format")
    e.add_argument("--output", "-o", required=True, help="file to write")
    e.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    e.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    e.set_defaults(func=run)


def run(args) -> int:
    from ..io.atomic import check_output
    from ..io.export import export_trace
    from ..progress import ProgressLine

    check_output(args.output, "file", "--output")  # before any work

    line = ProgressLine(not args.quiet and sys.stderr.isatty() or args.progress)
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        el = time.perf_counter() - t0
        line.show(done / max(total, 1), f"{done:,} of {total:,} requests  elapsed {el:5.1f}s", final=done >= total)

    rows = export_trace(args.trace, args.to, args.output, progress)
    if not args.quiet:
        print(f"wrote {rows:,} requests to {args.output} ({args.to}) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return 0
