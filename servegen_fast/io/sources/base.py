"""What every log reader returns (`RequestLog`, `ReadReport`), the rows-with-line-numbers
bookkeeping that lets every bad row be named by its line, and the common last step."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

_EXAMPLES = 5  # line numbers kept per drop reason


class LogFormatError(ValueError):
    """A request log cannot be read as the format it was given as."""


@dataclass
class ReadReport:
    path: str
    format: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict = field(default_factory=dict)     # reason -> rows
    lines: dict = field(default_factory=dict)       # reason -> first line numbers (1-based)
    flagged: dict = field(default_factory=dict)     # kept but marked, e.g. failed requests
    reordered: int = 0                               # rows moved by sort=True

    def drop(self, reason: str, line_numbers: np.ndarray) -> None:
        if len(line_numbers):
            self.dropped[reason] = self.dropped.get(reason, 0) + int(len(line_numbers))
            self.lines[reason] = sorted(self.lines.get(reason, []) + [int(x) for x in line_numbers[:_EXAMPLES]])[:_EXAMPLES]

    def describe(self) -> str:
        out = [f"{self.path} ({self.format}): {self.rows_read:,} rows read, {self.rows_kept:,} kept"]
        for reason, n in self.dropped.items():
            out.append(f"  dropped {n:,}: {reason} (lines {', '.join(map(str, self.lines[reason]))}"
                       f"{', ...' if n > len(self.lines[reason]) else ''})")
        for reason, n in self.flagged.items():
            out.append(f"  flagged {n:,}: {reason}")
        if self.reordered:
            out.append(f"  sorted: {self.reordered:,} rows were out of time order")
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "rows_read": self.rows_read, "rows_kept": self.rows_kept,
                "dropped": dict(self.dropped), "lines": dict(self.lines), "flagged": dict(self.flagged),
                "reordered": self.reordered}


@dataclass
class RequestLog:
    """Requests of a log, in time order. Columns are NumPy arrays of one length."""
    timestamp: np.ndarray        # float64 seconds from `start`, ascending
    input_tokens: np.ndarray     # int64
    output_tokens: np.ndarray    # int64
    columns: dict                # other columns (possible client keys, `failed`): name -> array
    start: float                 # the log's clock at t = 0 (Unix seconds for Azure; else its own clock)
    resolution: float            # timestamp resolution (s); 0 when continuous
    report: ReadReport
    duration: float | None = None  # known span (a trace's metadata), else None
    start_text: str | None = None   # the original first timestamp as written, where it is a date
    blocks: object = None          # pyarrow list<int64> of KV block ids per request (Mooncake hash_ids), or None
    block_size: int | None = None   # tokens per block of `blocks`

    def __len__(self) -> int:
        return len(self.timestamp)

    @property
    def span(self) -> float:
        """Seconds covered: the known duration, else just past the last request (whole seconds)."""
        if self.duration is not None:
            return float(self.duration)
        return float(np.floor(self.timestamp[-1]) + 1.0) if len(self) else 0.0

    def key_columns(self) -> list[str]:
        return [k for k in self.columns if k != "failed"]


# --------------------------------------------------------------------------- entry points

MAX_LENGTH = 2 ** 32 - 1  # traces store token counts as uint32


class Rows:
    """Rows of a log with their line numbers, narrowed as bad rows are dropped."""

    def __init__(self, path: Path, fmt: str, on_error: str, table: pa.Table, lines: np.ndarray, report: ReadReport):
        self.path, self.fmt, self.on_error = path, fmt, on_error
        self.table, self.lines, self.report = table, lines, report

    def reject(self, bad: np.ndarray, reason: str, detail=None) -> None:
        """Drop rows where `bad` (or raise, naming the first). `detail(i)` describes row i."""
        if not bad.any():
            return
        if self.on_error == "raise":
            i = int(np.flatnonzero(bad)[0])
            what = detail(i) if detail else reason
            raise LogFormatError(f"{self.path}, line {int(self.lines[i])}: {what} "
                                 f"(pass on_error='drop' / --on-bad-row drop to skip and count such rows)")
        self.report.drop(reason, self.lines[bad])
        keep = ~bad
        self.table = self.table.filter(pa.array(keep))
        self.lines = self.lines[keep]

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)


def split_lines(path: Path) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(data without CR, line start offsets, line end offsets) of every line, blank ones included."""
    buf = np.fromfile(path, dtype=np.uint8)
    buf = buf[buf != 13]
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    if len(buf) and buf[-1] == 10:  # a final newline does not open another line
        starts, ends = starts[:-1], ends[:-1]
    return buf, starts, ends


def nonblank(buf: np.ndarray, starts, ends, line_no):
    """Drop blank (empty or whitespace-only) lines: they are not rows."""
    is_space = np.isin(buf, np.frombuffer(b" \t", np.uint8))
    nonspace = np.concatenate(([0], np.cumsum(~is_space)))
    keep = nonspace[ends] - nonspace[starts] > 0
    return starts[keep], ends[keep], line_no[keep]


def select(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """The given lines, each with its newline, as one buffer (for pyarrow's readers)."""
    mask = np.zeros(len(buf) + 2, np.int64)
    np.add.at(mask, starts, 1)
    np.add.at(mask, ends + 1, -1)
    keep = np.cumsum(mask)[:len(buf)] > 0
    body = buf[keep].tobytes()
    return body if body.endswith(b"\n") else body + b"\n"


def finish(rows: Rows, t: np.ndarray, lengths: dict, extra: dict, sort: bool, resolution: float,
            start_text=None) -> RequestLog:
    """Order check, shift to the first request, wrap up."""
    path, report = rows.path, rows.report
    bad = ~np.isfinite(t)
    if bad.any():  # e.g. "1e999"
        rows.reject(bad, "unparseable timestamp", lambda i: f"timestamp {t[i]!r} is not finite")
        keep = ~bad
        t = t[keep]
        lengths = {k: v[keep] for k, v in lengths.items()}
        extra = {k: v[keep] for k, v in extra.items()}
    if len(t) == 0:
        dropped = "; ".join(f"{n} {reason} (lines {report.lines[reason]})" for reason, n in report.dropped.items())
        raise LogFormatError(f"{path}: no requests" + (f" left after dropping {dropped}" if dropped else ""))
    back = np.flatnonzero(np.diff(t) < 0)
    if len(back):
        if not sort:
            i = int(back[0]) + 1
            raise LogFormatError(f"{path}, line {int(rows.lines[i])}: timestamp goes backwards ({t[i]!r} after "
                                 f"{t[i - 1]!r}); pass sort=True / --sort to sort the log by time")
        order = np.argsort(t, kind="stable")
        report.reordered = int(np.count_nonzero(order != np.arange(len(t))))
        t = t[order]
        lengths = {k: v[order] for k, v in lengths.items()}
        extra = {k: v[order] for k, v in extra.items()}
    report.rows_kept = len(t)
    start = float(t[0])
    return RequestLog(timestamp=t - start, input_tokens=lengths["input_tokens"],
                      output_tokens=lengths["output_tokens"], columns=extra, start=start, resolution=resolution,
                      report=report, start_text=start_text)
