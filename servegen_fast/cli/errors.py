"""How the command line ends: one line for a user's error (naming the argument or file), an
install hint for a missing optional dependency, a traceback and a request to report it for a
bug; SIGTERM handled like Ctrl-C, so temporary files are removed on every exit Python sees."""
from __future__ import annotations

import signal
import sys
import traceback

from ..version import __version__

# optional module -> the extra that installs it
EXTRAS = {"torch": "replay", "transformers": "replay", "aiohttp": "replay", "psutil": "replay",
          "uvloop": "replay", "matplotlib": "plot", "numba_cuda": "gpu", "vllm": None}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that every cleanup runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


def install_sigterm():
    """Handle SIGTERM like Ctrl-C; returns the handler it replaced (None if it could not)."""
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (the CLI called from a thread): leave it
        return None


def restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def missing_module_hint(e: ModuleNotFoundError) -> str:
    root = (e.name or "").split(".")[0]
    if root not in EXTRAS:
        return ""
    extra = EXTRAS[root]
    if extra is None:
        return f"error: this needs {root}, which is not installed here (pip install {root})"
    return (f"error: this needs {root}, which is not installed: pip install 'servegen-fast[{extra}]' "
            f"(or pip install -e '.[{extra}]' in a checkout)")


def one_line(e: BaseException) -> str:
    """A user error's message on one line."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = str(e) or type(e).__name__
    return " ".join(text.split()) if "\n" in text.strip() and len(text) < 400 else text.strip()


def bug_report(e: BaseException) -> None:
    traceback.print_exception(e, file=sys.stderr)
    print(f"\nThis is a bug in servegen-fast {__version__} (Python {sys.version.split()[0]}): please report it "
          "to its maintainers with the command line and the traceback above", file=sys.stderr)
