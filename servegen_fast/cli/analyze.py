"""`servegen-fast analyze`: a trace or log's summary, or a fidelity table against another."""
from __future__ import annotations

import json

from .args import positive
from .logs import add_read_arguments, read


def add_arguments(sub) -> None:
    from ..io.sources import FORMATS

    a = sub.add_parser("analyze", help="summarise a trace or log; compare it with another (fidelity table)",
                       description="Summarise a trace or request log; with --against, a side-by-side fidelity table.")
    a.add_argument("trace", help="trace or request log to analyse")
    a.add_argument("--format", choices=("auto",) + FORMATS, default="auto", help="its format (default: from the file)")
    a.add_argument("--against", default=None, help="reference log or trace to compare with")
    a.add_argument("--against-format", choices=("auto",) + FORMATS, default="auto",
                   help="the reference's format (default: from the file)")
    a.add_argument("--client-key", default=None, help="column for the top clients' share (default: client_id if any)")
    a.add_argument("--bin", type=positive(), default=60.0, help="rate-series bin in seconds (default: 60)")
    a.add_argument("--plots", default=None, metavar="DIR", help="write PNG plots into DIR (needs matplotlib)")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    add_read_arguments(a)
    a.set_defaults(func=run)




def run(args) -> int:
    from ..characterize import analyze as A

    if args.plots:  # before any work: the plot extra, and a directory that can be written
        from ..characterize.plots import require_matplotlib
        from ..io.atomic import check_output

        require_matplotlib()
        check_output(args.plots, "dir", "--plots")
    trace = read(args.trace, args.format, args)
    ref = read(args.against, args.against_format, args) if args.against else None
    if ref is None:
        result = A.summarize(trace, args.client_key, bin_s=args.bin)
        text = A.format_summary(result)
    else:
        result = A.compare(trace, ref, bin_s=args.bin)
        text = A.format_comparison(result)
    if args.plots:
        from ..characterize.plots import write_plots

        paths = write_plots(trace, args.plots, ref, bin_s=args.bin)
        text += "\n\nplots: " + ", ".join(str(p) for p in paths)
    print(json.dumps(result, indent=1) if args.json else text)
    return 0
