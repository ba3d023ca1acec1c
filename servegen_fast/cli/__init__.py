"""The `servegen-fast` command: one module per subcommand, each with `add_arguments(sub)` and
`run(args)`; the work itself lives in the library."""
from __future__ import annotations

import argparse
import sys

from ..version import __version__
from . import analyze, fit, generate, info, profile, provision, replay, serve, simulate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servegen-fast", description="Generate realistic LLM-serving workloads, fast.")
    p.add_argument("--version", action="version", version=f"servegen-fast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in (generate, info, fit, analyze, replay, serve, profile, simulate, provision):  # each imports its library when run
        command.add_arguments(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # user errors, raised with a message
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: no partial file was left at the output path", file=sys.stderr)
        return 130
