"""The summary statistics of ServeGen's language pools: kept in summary.json beside this module.

The builtin pool is drawn from this file alone; `derive.derive_summary` recomputes it from
ServeGen's data. Numbers are rounded to 4 significant digits and written so that reading the
file back gives exactly the same floats.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SUMMARY_PATH = Path(__file__).resolve().with_name("summary.json")


def load_summary(path: str | Path = SUMMARY_PATH) -> dict:
    return json.loads(Path(path).read_text())


def save_summary(summary: dict, path: str | Path = SUMMARY_PATH) -> Path:
    path = Path(path)
    path.write_text(dumps(summary))
    return path


def dumps(summary: dict) -> str:
    """JSON with one key per line and lists of numbers kept on one line (readable diffs)."""
    def enc(x, indent: str) -> str:
        if isinstance(x, dict):
            inner = indent + "  "
            items = (f"{inner}{json.dumps(k)}: {enc(v, inner)}" for k, v in x.items())
            return "{\n" + ",\n".join(items) + "\n" + indent + "}"
        if isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x):
            inner = indent + "  "
            return "[\n" + ",\n".join(inner + enc(v, inner) for v in x) + "\n" + indent + "]"
        return json.dumps(x)  # floats as repr: read back bit for bit
    return enc(summary, "") + "\n"


def sig(x, digits: int = 4):
    """Round floats (recursively) to `digits` significant digits; tuples become lists, as in JSON."""
    if isinstance(x, dict):
        return {k: sig(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [sig(v, digits) for v in x]
    if isinstance(x, (np.integer, int)) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return 0.0 if x == 0 else float(f"{x:.{digits - 1}e}")
    return x


def leaves(x, prefix: str = ""):
    """(dotted path, value) of every number or string in a nested summary."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def differences(derived: dict, kept: dict) -> list[str]:
    """One line per leaf where the two summaries differ (or that only one has)."""
    a, b = dict(leaves(derived)), dict(leaves(kept))
    out = []
    for key in list(b) + [k for k in a if k not in b]:
        if a.get(key, "(missing)") != b.get(key, "(missing)"):
            out.append(f"{key}: derived {a.get(key, '(missing)')!r}, summary.json {b.get(key, '(missing)')!r}")
    return out
