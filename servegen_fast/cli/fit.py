"""`servegen-fast fit`: a request log -> a client pool file."""
from __future__ import annotations

import json
import sys

from .args import ks_distance, positive
from .logs import add_read_arguments, read


def add_arguments(sub) -> None:
    from ..io.sources import FORMATS

    f = sub.add_parser("fit", help="fit a client pool to a request log",
                       description="Fit a per-client pool (rates, IAT laws, length distributions) to a request log; "
                                   "see docs/fit-analyze.md.")
    f.add_argument("log", help="request log: Azure CSV, BurstGPT CSV, Mooncake JSONL, or a trace")
    f.add_argument("--format", choices=("auto",) + FORMATS, default="auto", help="log format (default: from the file)")
    f.add_argument("--client-key", default=None,
                   help="column(s) naming the client, comma-separated (e.g. 'Model,Log Type'; a trace: client_id); "
                        "default: the whole log is one client")
    f.add_argument("--output", "-o", required=True, help="pool file to write (.parquet)")
    f.add_argument("--window", type=positive(int), default=600, help="arrival window in seconds (default: 600)")
    f.add_argument("--length-window", type=positive(int), default=21600, help="length window in seconds (default: 21600)")
    f.add_argument("--min-requests", type=positive(int), default=10,
                   help="requests a window needs to fit its own law; sparser windows borrow (default: 10)")
    f.add_argument("--min-length-samples", type=positive(int), default=20,
                   help="requests a length window needs for its own distributions (default: 20)")
    f.add_argument("--length-points", type=positive(int), default=256,
                   help="most support points of a length distribution (default: 256)")
    f.add_argument("--shape-rule", choices=("moments", "mle"), default="moments",
                   help="law shape: match the window's IAT CV (default) or the maximum-likelihood shape")
    f.add_argument("--modulation", choices=("fit", "off"), default="fit",
                   help="intra-window rate modulation per client, chosen by the IDC-curve error (default: fit; "
                        "off: ServeGen's plain windows)")
    f.add_argument("--ks-threshold", type=ks_distance, default=0.1,
                   help="report fitted windows whose chosen law has a KS distance above this (default: 0.1)")
    f.add_argument("--sessions-out", default=None, metavar="PROFILE",
                   help="also fit a session profile (multi-turn sessions, shared prompts) from the log's KV block ids "
                        "(Mooncake hash_ids, or a trace made with --sessions) and write it to this JSON file; the "
                        "pool's input lengths are then the first turns' (docs/sessions.md)")
    f.add_argument("--report", default=None, help="also write the fit report as JSON to this file")
    f.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    add_read_arguments(f)
    f.set_defaults(func=run)


def run(args) -> int:
    from ..characterize.fit import FitOptions, fit_pool
    from ..io.atomic import check_output, write_text
    from ..io.pool_file import save_pool

    check_output(args.output, "file", "--output")  # before any work
    if args.report:
        check_output(args.report, "file", "--report")
    if args.sessions_out:
        check_output(args.sessions_out, "file", "--sessions-out")
    log = read(args.log, args.format, args)
    opts = FitOptions(window=args.window, length_window=args.length_window, min_requests=args.min_requests,
                      min_length_samples=args.min_length_samples, length_points=args.length_points,
                      shape_rule=args.shape_rule, modulation=args.modulation == "fit",
                      ks_threshold=args.ks_threshold)
    sessions = None
    if args.sessions_out:
        from ..characterize import sessions as S
        from ..characterize.fit import client_index

        try:
            st = S.session_structure(log)
        except ValueError as e:
            raise SystemExit(f"error: --sessions-out: {e}") from None
        result = fit_pool(log, args.client_key, opts, input_rows=S.first_turns(log, st))
        ci, ids, _, _ = client_index(log, args.client_key)
        profiles, sessions = S.fit_sessions(log, ci, ids, structure=st)
        write_text(args.sessions_out, json.dumps(profiles.to_dict()))
    else:
        result = fit_pool(log, args.client_key, opts)
    save_pool(result.pool, args.output)
    if args.report:
        summary = {**result.summary(), "client_labels": result.labels}
        if sessions is not None:
            summary["sessions"] = sessions
        write_text(args.report, json.dumps(summary, indent=1))
    if len(log) < 2 or result.summary()["servegen_mode_requests"] == 0:
        print(f"warning: {args.log} has {len(log):,} request(s): {args.output} generates no requests in servegen "
              "mode (ceil(rate x window) - 1 per window); generate from it with --mode renewal, or fit a longer log",
              file=sys.stderr)
    if not args.quiet:
        print(log.report.describe())
        print(result.describe())
        if sessions is not None:
            w = sessions["whole log"]
            print(f"sessions: {w['sessions']:,} ({w['multi_turn_sessions']:,} multi-turn), {w['later_turns']:,} later "
                  f"turns, {w.get('prompts', 0):,} shared prompts; wrote {args.sessions_out}")
        print(f"wrote {args.output}")
    return 0
