"""Reading request logs: the options `fit` and `analyze` share."""
from __future__ import annotations

import argparse

from .args import positive


def add_read_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-bad-row", choices=("error", "drop"), default="error",
                   help="a malformed row (bad field count, unparseable timestamp, negative length): stop with an "
                        "error naming its line (default), or drop it and count it in the read report")
    p.add_argument("--sort", action="store_true", help="sort a log whose timestamps go backwards (default: error)")
    p.add_argument("--drop-failed", action="store_true",
                   help="BurstGPT: drop rows with zero response tokens (default: keep them, flagged)")
    p.add_argument("--block-size", type=positive(int), default=None,
                   help="Mooncake: tokens per hash_ids block (default: inferred from the id counts; 512, "
                        "Mooncake's own, where they allow it)")


def read(path, fmt, args):
    from ..io.sources import read_log

    return read_log(path, fmt, on_error="drop" if args.on_bad_row == "drop" else "raise", sort=args.sort,
                    drop_failed=args.drop_failed, block_size=args.block_size)
