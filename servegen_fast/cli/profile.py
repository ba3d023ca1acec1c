"""`servegen-fast profile`: calibrate an engine profile on the on-device engine (simulate.calibrate)."""
from __future__ import annotations

import sys


def add_arguments(sub) -> None:
    p = sub.add_parser("profile", help="measure an engine profile for `simulate` and `provision`",
                       description="Run the on-device engine (transformers continuous batching) through a calibration "
                                   "sweep of prefill chunks and decode batches, fit the step-time model and write the "
                                   "profile (JSON) with the model, device and library versions it was measured on. "
                                   "See docs/simulate.md.")
    p.add_argument("--output", "-o", required=True, help="profile file to write (JSON)")
    p.add_argument("--model", default="tiny", help="size name (tiny, 1b, 8b) or a local checkpoint directory")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default: cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and prompts")
    p.add_argument("--page-size", type=int, default=None, help="KV-cache page size in tokens (engine default)")
    p.add_argument("--num-blocks", type=int, default=None, help="KV-cache blocks (engine default)")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="tokens per forward pass (engine default)")
    p.add_argument("--passes", default=None, help="also write the recorded passes here (CSV)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..io.atomic import atomic_path
    from ..replay.local.transformers import quiet_transformers
    from ..simulate.calibrate import calibrate
    from ..simulate.profile import save_profile

    quiet_transformers()
    opts = {k: v for k, v in (("page_size", args.page_size), ("num_blocks", args.num_blocks),
                              ("max_batch_tokens", args.max_batch_tokens)) if v is not None}
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    prof, steps = calibrate(model=args.model, device=args.device, seed=args.seed, engine_options=opts, log=log)
    save_profile(prof, args.output)
    if args.passes:
        with atomic_path(args.passes) as tmp:
            np.savetxt(tmp, steps, delimiter=",", fmt="%.9g",
                       header="seconds,prefill_tokens,prefill_seqs,decode_seqs,kv_tokens,prefill_attn", comments="")
    print(prof.describe())
    print(f"fit: {prof.fit['passes']} passes, median |error| {prof.fit['median_abs_rel_error']:.1%}, "
          f"total time error decode {prof.fit['decode_total_time_rel_error']:+.1%}, "
          f"prefill {prof.fit['prefill_total_time_rel_error']:+.1%}")
    print(f"profile written to {args.output}", file=sys.stderr)
    return 0
