"""Argument types shared by the subcommands: durations, positive numbers, correlations."""
from __future__ import annotations

import argparse
import math
import re

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)")


def parse_seconds(text: str) -> float:
    """'0.5', '500ms', '2s', '90m', '36h', '14d', '2w' or '1h30m' -> seconds (a float)."""
    s = str(text).strip().lower()
    try:
        value = float(s)
    except ValueError:
        terms = _TERM.findall(s)
        if not terms or "".join(n + u for n, u in terms) != s:
            raise argparse.ArgumentTypeError(
                f"invalid duration {text!r}: use seconds or units ms/s/m/h/d/w, e.g. 200ms, 90m, 36h, 14d") from None
        value = sum(float(n) * _UNITS[u] for n, u in terms)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be a finite, non-negative time")
    return value


def parse_duration(text: str) -> int:
    """A duration in whole seconds (generation works on whole seconds)."""
    value = parse_seconds(text)
    if not float(value).is_integer():
        raise argparse.ArgumentTypeError(f"duration {text!r} is not a whole number of seconds")
    return int(value)


def _number(kind, text: str, allow_zero: bool):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    if v < 0 or (v == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(f"must be {'non-negative' if allow_zero else 'positive'}, got {text}")
    return v


def positive(kind=float):
    """An argparse type: a finite number > 0."""
    return lambda text: _number(kind, text, allow_zero=False)


def non_negative(kind=float):
    """An argparse type: a finite number >= 0."""
    return lambda text: _number(kind, text, allow_zero=True)


def ks_distance(text: str) -> float:
    """A KS-distance threshold in (0, 1]."""
    v = _number(float, text, allow_zero=False)
    if v > 1:
        raise argparse.ArgumentTypeError(f"a KS distance is at most 1, got {v}")
    return v


def correlation(text: str):
    """'comonotone', 'independent' or a copula correlation in [0, 1]."""
    if text in ("comonotone", "independent"):
        return text
    try:
        rho = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"correlation must be comonotone, independent or a number in [0, 1], "
                                         f"got {text!r}") from None
    if not 0 <= rho <= 1:
        raise argparse.ArgumentTypeError(f"copula correlation must be in [0, 1], got {rho}")
    return rho


def add_no_spread(p) -> None:
    """--no-spread, shared by simulate and provision."""
    p.add_argument("--no-spread", action="store_true",
                   help="every pass at the profile's fitted time (default: each pass with a prefill takes a factor "
                        "drawn from the profile's measured spread, keyed by instance and pass: deterministic)")


def add_release(p, completion: str, note: str = "") -> None:
    """--release, shared by replay, simulate and provision: how a session's later turns are released."""
    p.add_argument("--release", choices=("auto", "closed", "open"), default="auto",
                   help=f"closed: a session's next turn at the previous turn's {completion} + its think time; "
                        f"open: every request at its trace time; auto (default): closed where the trace has "
                        f"sessions{note}")
