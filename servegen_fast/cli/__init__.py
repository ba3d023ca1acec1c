"""The `servegen-fast` command: one module per subcommand, each with `add_arguments(sub)` and
`run(args)`; the work itself lives in the library."""
from __future__ import annotations

import argparse
import sys

from ..version import __version__
from . import analyze, errors, export, fit, generate, info, profile, provision, replay, serve, simulate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servegen-fast", description="Generate realistic LLM-serving workloads, fast.")
    p.add_argument("--version", action="version", version=f"servegen-fast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in (generate, info, fit, analyze, export, replay, serve, profile, simulate, provision):
        command.add_arguments(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    previous = errors.install_sigterm()
    try:
        return _run(args)
    finally:
        errors.restore_sigterm(previous)  # main() called from Python leaves the process as it was


def _run(args) -> int:
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except errors.Terminated:
        print("\nterminated (SIGTERM): temporary files removed, no partial file left at the output path",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("\ninterrupted: no partial file was left at the output path", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:  # an optional dependency: the extra that installs it
        hint = errors.missing_module_hint(e)
        if not hint:
            errors.bug_report(e)
            return 1
        print(hint, file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as e:  # user errors (bad input, paths), raised with a message
        print(f"error: {errors.one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory (lower --chunk-mb, or generate partitions with --partition)", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: the traceback, and a request to report it
        errors.bug_report(e)
        return 1
