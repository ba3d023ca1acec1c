"""Readers of request logs: Azure LLM inference CSV, BurstGPT CSV (v1 and v3), Mooncake JSONL,
and our own Arrow / Parquet traces.

Each reader returns a `RequestLog`: timestamps in seconds from the log's first request (the
original start is kept in `start`), input and output lengths, the other columns usable as a
client key, and a `ReadReport` (rows read, kept, dropped per reason, with the first lines of
each reason). Nothing is dropped silently: with ``on_error="raise"`` (the default) the first
bad row raises `LogFormatError` naming its file and line; with ``on_error="drop"`` bad rows
are counted and skipped. Timestamps that go backwards raise unless ``sort=True``.

CSV files are split into lines with NumPy and only well-formed lines go to pyarrow's CSV
parser, so every row keeps its exact line number. Quoted fields holding commas are not
supported (none of these formats has them). JSONL goes through pyarrow's JSON reader; only
when that fails does a line-by-line pass run, to name the bad lines.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

FORMATS = ("azure", "burstgpt", "mooncake", "trace")
ON_ERROR = ("raise", "drop")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")  # required; others are keys
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
FAILED = "failed (zero response tokens)"
_EXAMPLES = 5  # line numbers kept per drop reason

_INT = r"^\s*[+-]?\d+(\.0*)?\s*$"
_FLOAT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_DATETIME = r"^\s*\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?\s*$"


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
def detect_format(path: str | os.PathLike) -> str:
    """Guess a log's format from its suffix and (for CSV) its header."""
    path = Path(path)
    if path.is_dir() or path.suffix in (".parquet", ".arrow", ".ipc", ".feather"):
        return "trace"
    if path.suffix in (".jsonl", ".json"):
        return "mooncake"
    if not path.is_file():
        raise FileNotFoundError(f"log not found: {path}")
    with open(path, "rb") as f:
        head = f.read(6)
        if head == b"ARROW1" or head[:4] == b"PAR1":
            return "trace"
        header = (head + f.readline()).decode("utf-8", "replace").strip()
    cols = [c.strip() for c in header.split(",")]
    if set(AZURE_COLUMNS) <= set(cols):
        return "azure"
    if set(BURSTGPT_COLUMNS) <= set(cols):
        return "burstgpt"
    if header.startswith("{"):
        return "mooncake"
    raise LogFormatError(f"{path}: cannot tell the log format from its header {header[:120]!r}; "
                         f"give the format ({', '.join(FORMATS)})")


def read_log(path: str | os.PathLike, format: str = "auto", *, on_error: str = "raise", sort: bool = False,
             drop_failed: bool = False) -> RequestLog:
    """Read a request log of the given format ("auto": `detect_format`)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "azure":
        return read_azure(path, on_error=on_error, sort=sort)
    if fmt == "burstgpt":
        return read_burstgpt(path, on_error=on_error, sort=sort, drop_failed=drop_failed)
    if fmt == "mooncake":
        return read_mooncake(path, on_error=on_error, sort=sort)
    if fmt == "trace":
        return read_trace_log(path)
    raise ValueError(f"unknown log format {fmt!r}; expected one of {FORMATS} or 'auto'")


# --------------------------------------------------------------------------- CSV plumbing
class _Rows:
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


def _split_lines(path: Path) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(data without CR, line start offsets, line end offsets) of every line, blank ones included."""
    buf = np.fromfile(path, dtype=np.uint8)
    buf = buf[buf != 13]
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    if len(buf) and buf[-1] == 10:  # a final newline does not open another line
        starts, ends = starts[:-1], ends[:-1]
    return buf, starts, ends


def _nonblank(buf: np.ndarray, starts, ends, line_no):
    """Drop blank (empty or whitespace-only) lines: they are not rows."""
    is_space = np.isin(buf, np.frombuffer(b" \t", np.uint8))
    nonspace = np.concatenate(([0], np.cumsum(~is_space)))
    keep = nonspace[ends] - nonspace[starts] > 0
    return starts[keep], ends[keep], line_no[keep]


def _select(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """The given lines, each with its newline, as one buffer (for pyarrow's readers)."""
    mask = np.zeros(len(buf) + 2, np.int64)
    np.add.at(mask, starts, 1)
    np.add.at(mask, ends + 1, -1)
    keep = np.cumsum(mask)[:len(buf)] > 0
    body = buf[keep].tobytes()
    return body if body.endswith(b"\n") else body + b"\n"


def _read_csv(path: Path, fmt: str, required: tuple, on_error: str) -> _Rows:
    """Header check, field-count check per line, then every well-formed line parsed as strings."""
    if not path.is_file():
        raise FileNotFoundError(f"log not found: {path}")
    buf, starts, ends = _split_lines(path)
    if len(starts) == 0 or not buf[starts[0]:ends[0]].tobytes().strip():
        raise LogFormatError(f"{path}: empty file; expected a header line with {', '.join(required)}")
    header = [c.strip() for c in buf[starts[0]:ends[0]].tobytes().decode("utf-8", "replace").split(",")]
    missing = [c for c in required if c not in header]
    if missing:
        raise LogFormatError(f"{path}, line 1: missing column(s) {missing}; a {fmt} log needs {list(required)}, "
                             f"found {header}")
    if len(set(header)) != len(header):
        raise LogFormatError(f"{path}, line 1: repeated column names in {header}")
    starts, ends, line_no = _nonblank(buf, starts[1:], ends[1:], np.arange(2, len(starts) + 1))
    report = ReadReport(str(path), fmt, rows_read=len(starts))
    commas = np.concatenate(([0], np.cumsum(buf == 44)))
    nfields = commas[ends] - commas[starts] + 1
    bad = nfields != len(header)
    if bad.any():
        if on_error == "raise":
            i = int(np.flatnonzero(bad)[0])
            text = buf[starts[i]:ends[i]].tobytes().decode("utf-8", "replace")
            raise LogFormatError(f"{path}, line {int(line_no[i])}: expected {len(header)} comma-separated fields "
                                 f"({','.join(header)}), found {int(nfields[i])}: {text[:200]!r} (pass "
                                 f"on_error='drop' / --on-bad-row drop to skip and count such rows)")
        report.drop("malformed (wrong number of fields)", line_no[bad])
        starts, ends, line_no = starts[~bad], ends[~bad], line_no[~bad]
    if len(starts):
        table = pacsv.read_csv(io.BytesIO(_select(buf, starts, ends)),
                               read_options=pacsv.ReadOptions(column_names=header),
                               parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                               convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                                    strings_can_be_null=False))
    else:
        table = pa.table({c: pa.array([], pa.string()) for c in header})
    if table.num_rows != len(starts):  # pragma: no cover - guards the line bookkeeping
        raise LogFormatError(f"{path}: parsed {table.num_rows} rows from {len(starts)} lines (quoted fields?)")
    return _Rows(path, fmt, on_error, table, line_no, report)


def _text(rows: _Rows, name: str, i: int) -> str:
    return repr(rows.column(name)[i].as_py())


def _lengths(rows: _Rows, names: dict) -> dict:
    """Validate and convert length columns {column: output name}: whole, non-negative numbers."""
    for col in names:
        s = rows.column(col)
        bad = ~pc.match_substring_regex(s, _INT).to_numpy(zero_copy_only=False)
        rows.reject(bad, "unparseable length", lambda i, c=col: f"{c} is {_text(rows, c, i)}; expected a whole number")
    values = {}
    for col, name in names.items():
        v = pc.cast(pc.utf8_trim_whitespace(rows.column(col)), pa.float64()).to_numpy()
        rows.reject(v < 0, "negative length", lambda i, c=col: f"{c} is {_text(rows, c, i)}; lengths must not be negative")
    for col, name in names.items():
        values[name] = pc.cast(pc.utf8_trim_whitespace(rows.column(col)), pa.float64()).to_numpy().astype(np.int64)
    return values


def _seconds(rows: _Rows, col: str) -> np.ndarray:
    s = rows.column(col)
    bad = ~pc.match_substring_regex(s, _FLOAT).to_numpy(zero_copy_only=False)
    rows.reject(bad, "unparseable timestamp", lambda i: f"{col} is {_text(rows, col, i)}; expected seconds (a number)")
    return pc.cast(pc.utf8_trim_whitespace(rows.column(col)), pa.float64()).to_numpy()


def _datetimes(rows: _Rows, col: str) -> np.ndarray:
    """Datetime text -> Unix seconds (float64); calendar-invalid dates count as unparseable."""
    s = rows.column(col)
    ok = pc.match_substring_regex(s, _DATETIME).to_numpy(zero_copy_only=False)
    # a well-shaped but impossible date (month 13) fails the cast: find those one by one (rare)
    trimmed = pc.utf8_trim_whitespace(s)
    try:
        pc.cast(trimmed.filter(pa.array(ok)), pa.timestamp("ns"))
    except pa.ArrowInvalid:
        idx = np.flatnonzero(ok)
        for i in idx:
            try:
                pc.cast(trimmed[int(i)], pa.timestamp("ns"))
            except pa.ArrowInvalid:
                ok[i] = False
    rows.reject(~ok, "unparseable timestamp",
                lambda i: f"{col} is {_text(rows, col, i)}; expected a date and time like 2023-11-16 18:15:46.68")
    ns = pc.cast(pc.utf8_trim_whitespace(rows.column(col)), pa.timestamp("ns")).to_numpy().astype(np.int64)
    return ns / 1e9


def _finish(rows: _Rows, t: np.ndarray, lengths: dict, extra: dict, sort: bool, resolution: float,
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


def _string_column(rows: _Rows, name: str) -> np.ndarray:
    return np.asarray(pc.utf8_trim_whitespace(rows.column(name)).to_numpy(zero_copy_only=False), dtype=object)


# --------------------------------------------------------------------------- readers
def read_azure(path: str | os.PathLike, *, on_error: str = "raise", sort: bool = False) -> RequestLog:
    """Azure LLM inference trace CSV: TIMESTAMP (date and time), ContextTokens, GeneratedTokens."""
    rows = _read_csv(Path(path), "azure", AZURE_COLUMNS, on_error)
    lengths = _lengths(rows, {"ContextTokens": "input_tokens", "GeneratedTokens": "output_tokens"})
    t = _datetimes(rows, "TIMESTAMP")
    first = str(rows.column("TIMESTAMP")[0].as_py()).strip() if rows.table.num_rows else None
    extra = {c: _string_column(rows, c) for c in rows.table.column_names if c not in AZURE_COLUMNS}
    return _finish(rows, t, lengths, extra, sort, resolution=_decimal_resolution(rows.column("TIMESTAMP")),
                   start_text=first)


def read_burstgpt(path: str | os.PathLike, *, on_error: str = "raise", sort: bool = False,
                  drop_failed: bool = False) -> RequestLog:
    """BurstGPT CSV, v1 (Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type) or
    v3 (with Session ID and Elapsed time): columns are read by name.

    Rows with zero response tokens are failed requests: kept and flagged in `columns["failed"]`,
    or dropped (and counted) with `drop_failed=True`.
    """
    rows = _read_csv(Path(path), "burstgpt", BURSTGPT_COLUMNS, on_error)
    lengths = _lengths(rows, {"Request tokens": "input_tokens", "Response tokens": "output_tokens"})
    t = _seconds(rows, "Timestamp")
    failed = lengths["output_tokens"] == 0
    if drop_failed and failed.any():
        rows.report.drop(FAILED, rows.lines[failed])
        rows.table = rows.table.filter(pa.array(~failed))
        rows.lines = rows.lines[~failed]
        t = t[~failed]
        lengths = {k: v[~failed] for k, v in lengths.items()}
        failed = failed[~failed]
    elif failed.any():
        rows.report.flagged[FAILED] = int(failed.sum())
    skip = set(BURSTGPT_COLUMNS) | {"Total tokens", "Elapsed time"}
    extra = {c: _string_column(rows, c) for c in rows.table.column_names if c not in skip}
    extra["failed"] = failed
    return _finish(rows, t, lengths, extra, sort, resolution=_decimal_resolution(rows.column("Timestamp")))


def _decimal_resolution(col: pa.ChunkedArray) -> float:
    """The finest step the timestamps are written with: 10^-(most decimals seen), 1 s without decimals."""
    if len(col) == 0:
        return 0.0
    frac = pc.extract_regex(pc.utf8_trim_whitespace(col), r"\.(?P<d>\d+)")
    if frac.null_count == len(frac):
        return 1.0
    digits = pc.max(pc.utf8_length(pc.struct_field(frac, [0]))).as_py()
    return 10.0 ** -int(digits)


def read_mooncake(path: str | os.PathLike, *, on_error: str = "raise", sort: bool = False) -> RequestLog:
    """Mooncake JSONL: one object a line with timestamp (ms), input_length, output_length, hash_ids."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log not found: {path}")
    buf, starts, ends = _split_lines(path)
    starts, ends, line_no = _nonblank(buf, starts, ends, np.arange(1, len(starts) + 1))
    if len(starts) == 0:
        raise LogFormatError(f"{path}: empty file; expected one JSON object a line with {', '.join(MOONCAKE_FIELDS)}")
    report = ReadReport(str(path), "mooncake", rows_read=len(starts))
    schema = pa.schema([(f, pa.float64()) for f in MOONCAKE_FIELDS])
    try:
        table = pajson.read_json(io.BytesIO(_select(buf, starts, ends)), parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"))
        if table.num_rows != len(starts):
            raise pa.ArrowInvalid("row count differs from line count")
        missing = np.zeros(len(starts), bool)
        for f in MOONCAKE_FIELDS:
            missing |= table.column(f).is_null().to_numpy(zero_copy_only=False)
        values = {f: table.column(f).fill_null(0).to_numpy() for f in MOONCAKE_FIELDS}
        bad_json = np.zeros(len(starts), bool)
    except pa.ArrowInvalid:
        values, missing, bad_json = _mooncake_slow(buf, starts, ends)
    rows = _Rows(path, "mooncake", on_error, pa.table({**values, "missing": missing, "bad_json": bad_json}),
                 line_no, report)
    col = lambda name: rows.column(name).to_numpy()  # noqa: E731
    rows.reject(col("bad_json"), "malformed (not a JSON object with numbers)",
                lambda i: f"not a JSON object with numeric {', '.join(MOONCAKE_FIELDS)}")
    rows.reject(col("missing"), "missing field", lambda i: f"missing one of {list(MOONCAKE_FIELDS)}")
    for f in ("input_length", "output_length"):
        rows.reject(col(f) != np.round(col(f)), "unparseable length",
                    lambda i, f=f: f"{f} is {col(f)[i]!r}; expected a whole number")
        rows.reject(col(f) < 0, "negative length", lambda i, f=f: f"{f} is {col(f)[i]!r}; lengths must not be negative")
    t_ms = col("timestamp")
    lengths = {"input_tokens": col("input_length").astype(np.int64),
               "output_tokens": col("output_length").astype(np.int64)}
    resolution = 1e-3 if np.all(t_ms == np.round(t_ms)) else 0.0
    return _finish(rows, t_ms / 1000.0, lengths, {}, sort, resolution=resolution)


def _mooncake_slow(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Line-by-line parse, run only when the fast reader fails: marks each bad line."""
    n = len(starts)
    values = {f: np.zeros(n) for f in MOONCAKE_FIELDS}
    missing = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    data = buf.tobytes()
    for i in range(n):
        try:
            obj = json.loads(data[starts[i]:ends[i]])
        except ValueError:
            bad[i] = True
            continue
        if not isinstance(obj, dict):
            bad[i] = True
            continue
        for f in MOONCAKE_FIELDS:
            v = obj.get(f)
            if v is None:
                missing[i] = True
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                bad[i] = True
            else:
                values[f][i] = float(v)
    return values, missing, bad


def read_trace_log(path: str | os.PathLike) -> RequestLog:
    """One of our own traces (Parquet, Arrow IPC or a partitioned directory). Its clock already
    starts at the trace start, so it is not shifted; `client_id` is a key column."""
    from .trace import read_trace, trace_metadata

    table = read_trace(path)
    need = ("timestamp", "input_tokens", "output_tokens")
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise LogFormatError(f"{path}: not a servegen-fast trace: missing column(s) {missing}; found "
                             f"{table.column_names}")
    report = ReadReport(str(path), "trace", rows_read=table.num_rows, rows_kept=table.num_rows)
    if table.num_rows == 0:
        raise LogFormatError(f"{path}: no requests")
    t = table.column("timestamp").to_numpy().astype(np.float64)
    if np.any(np.diff(t) < 0) or not np.all(np.isfinite(t)) or t[0] < 0:
        raise LogFormatError(f"{path}: trace timestamps must be finite, non-negative and ascending")
    cols = {}
    if "client_id" in table.column_names:
        cols["client_id"] = table.column("client_id").to_numpy().astype(np.int64)
    meta = trace_metadata(table.schema)
    duration = meta.get("duration")
    return RequestLog(timestamp=t, input_tokens=table.column("input_tokens").to_numpy().astype(np.int64),
                      output_tokens=table.column("output_tokens").to_numpy().astype(np.int64), columns=cols,
                      start=0.0, resolution=0.0, report=report,
                      duration=float(duration) if duration else None)
