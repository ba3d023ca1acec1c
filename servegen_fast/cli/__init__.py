"""The `servegen-fast` command: one module per subcommand, each with `add_arguments(sub)` and
`run(args)`; the work itself lives in the library."""
from __future__ import annotations

import argparse
import atexit
import gc
import sys

from ..version import __version__
from . import analyze, errors, export, fit, generate, info, profile, provision, replay, serve, simulate


COMMANDS = (generate, info, fit, analyze, export, replay, serve, profile, simulate, provision)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; with `only` (a subcommand's name) just that subcommand's arguments,
    so a run does not pay for the others' (fit's and analyze's log formats import pyarrow.compute
    and every log reader, 0.1-0.2 s)."""
    p = argparse.ArgumentParser(prog="servegen-fast", description="Generate realistic LLM-serving workloads, fast.")
    p.add_argument("--version", action="version", version=f"servegen-fast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        if only is None or _name(command) == only:
            command.add_arguments(sub)
    return p


def _name(command) -> str:
    return command.__name__.rpartition(".")[2]


def main(argv=None) -> int:
    if argv is None:  # the program itself (the console script, python -m), not a Python caller
        # at exit the interpreter's last collections walk every object Numba's compiler and the
        # loaded kernels made (0.13 s of each run); frozen, they are skipped. Runs only at exit
        # and, registered first, after the other handlers; a Python caller of main(argv) keeps
        # its own exit-time finalizers.
        atexit.register(gc.freeze)
    argv = sys.argv[1:] if argv is None else list(argv)
    named = argv[0] if argv and argv[0] in {_name(c) for c in COMMANDS} else None
    args = build_parser(named).parse_args(argv)  # no subcommand named (--help, a typo): all of them
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
