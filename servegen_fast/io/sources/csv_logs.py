"""CSV logs: Azure LLM inference traces and BurstGPT (v1, v3).

Files are split into lines with NumPy and only well-formed lines go to pyarrow's CSV parser, so
every row keeps its exact line number. Quoted fields holding commas are not supported (none of
these formats has them)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .base import MAX_LENGTH, LogFormatError, ReadReport, RequestLog, Rows, finish, nonblank, select, split_lines

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")  # required; others are keys
FAILED = "failed (zero response tokens)"

_INT = r"^\s*[+-]?\d+(\.0*)?\s*$"
_FLOAT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_DATETIME = r"^\s*\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?\s*$"


def _read_csv(path: Path, fmt: str, required: tuple, on_error: str) -> Rows:
    """Header check, field-count check per line, then every well-formed line parsed as strings."""
    if not path.is_file():
        raise FileNotFoundError(f"log not found: {path}")
    buf, starts, ends = split_lines(path)
    if len(starts) == 0 or not buf[starts[0]:ends[0]].tobytes().strip():
        raise LogFormatError(f"{path}: empty file; expected a header line with {', '.join(required)}")
    header = [c.strip() for c in buf[starts[0]:ends[0]].tobytes().decode("utf-8", "replace").split(",")]
    missing = [c for c in required if c not in header]
    if missing:
        raise LogFormatError(f"{path}, line 1: missing column(s) {missing}; a {fmt} log needs {list(required)}, "
                             f"found {header}")
    if len(set(header)) != len(header):
        raise LogFormatError(f"{path}, line 1: repeated column names in {header}")
    starts, ends, line_no = nonblank(buf, starts[1:], ends[1:], np.arange(2, len(starts) + 1))
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
    try:
        table = _parse(buf, starts, ends, header)
    except pa.ArrowInvalid as e:  # text that is not UTF-8: name its line, or drop such lines
        utf8 = np.array([_is_utf8(buf[a:b]) for a, b in zip(starts, ends)], dtype=bool)
        if utf8.all():
            raise LogFormatError(f"{path}: unreadable CSV ({e})") from None
        if on_error == "raise":
            i = int(np.flatnonzero(~utf8)[0])
            raise LogFormatError(f"{path}, line {int(line_no[i])}: not UTF-8 text: "
                                 f"{buf[starts[i]:ends[i]].tobytes()[:200]!r} (pass on_error='drop' / "
                                 "--on-bad-row drop to skip and count such rows)") from None
        report.drop("malformed (not UTF-8 text)", line_no[~utf8])
        starts, ends, line_no = starts[utf8], ends[utf8], line_no[utf8]
        try:
            table = _parse(buf, starts, ends, header)
        except pa.ArrowInvalid as e:
            raise LogFormatError(f"{path}: unreadable CSV ({e})") from None
    if table.num_rows != len(starts):  # pragma: no cover - guards the line bookkeeping (no quoting: one row a line)
        raise LogFormatError(f"{path}: parsed {table.num_rows} rows from {len(starts)} lines (quoted fields?)")
    return Rows(path, fmt, on_error, table, line_no, report)


def _parse(buf, starts, ends, header) -> pa.Table:
    if not len(starts):
        return pa.table({c: pa.array([], pa.string()) for c in header})
    return pacsv.read_csv(io.BytesIO(select(buf, starts, ends)), read_options=pacsv.ReadOptions(column_names=header),
                          parse_options=pacsv.ParseOptions(ignore_empty_lines=False, quote_char=False),
                          convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                               strings_can_be_null=False))


def _is_utf8(line: np.ndarray) -> bool:
    try:
        line.tobytes().decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text(rows: Rows, name: str, i: int) -> str:
    return repr(rows.column(name)[i].as_py())


def _lengths(rows: Rows, names: dict) -> dict:
    """Validate and convert length columns {column: output name}: whole, non-negative numbers."""
    for col in names:
        s = rows.column(col)
        bad = ~pc.match_substring_regex(s, _INT).to_numpy(zero_copy_only=False)
        rows.reject(bad, "unparseable length", lambda i, c=col: f"{c} is {_text(rows, c, i)}; expected a whole number")
    values = {}
    for col, name in names.items():
        v = pc.cast(pc.utf8_trim_whitespace(rows.column(col)), pa.float64()).to_numpy()
        rows.reject(v < 0, "negative length", lambda i, c=col: f"{c} is {_text(rows, c, i)}; lengths must not be negative")
        v = pc.cast(pc.utf8_trim_whitespace(rows.column(col)), pa.float64()).to_numpy()
        rows.reject(v > MAX_LENGTH, "length too large",
                    lambda i, c=col: f"{c} is {_text(rows, c, i)}; lengths must be at most {MAX_LENGTH}")
    for col, name in names.items():
        values[name] = pc.cast(pc.utf8_trim_whitespace(rows.column(col)), pa.float64()).to_numpy().astype(np.int64)
    return values


def _seconds(rows: Rows, col: str) -> np.ndarray:
    s = rows.column(col)
    bad = ~pc.match_substring_regex(s, _FLOAT).to_numpy(zero_copy_only=False)
    rows.reject(bad, "unparseable timestamp", lambda i: f"{col} is {_text(rows, col, i)}; expected seconds (a number)")
    return pc.cast(pc.utf8_trim_whitespace(rows.column(col)), pa.float64()).to_numpy()


def _datetimes(rows: Rows, col: str) -> np.ndarray:
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

def _string_column(rows: Rows, name: str) -> np.ndarray:
    return np.asarray(pc.utf8_trim_whitespace(rows.column(name)).to_numpy(zero_copy_only=False), dtype=object)

def read_azure(path: str | os.PathLike, *, on_error: str = "raise", sort: bool = False) -> RequestLog:
    """Azure LLM inference trace CSV: TIMESTAMP (date and time), ContextTokens, GeneratedTokens."""
    rows = _read_csv(Path(path), "azure", AZURE_COLUMNS, on_error)
    lengths = _lengths(rows, {"ContextTokens": "input_tokens", "GeneratedTokens": "output_tokens"})
    t = _datetimes(rows, "TIMESTAMP")
    first = str(rows.column("TIMESTAMP")[0].as_py()).strip() if rows.table.num_rows else None
    extra = {c: _string_column(rows, c) for c in rows.table.column_names if c not in AZURE_COLUMNS}
    return finish(rows, t, lengths, extra, sort, resolution=_decimal_resolution(rows.column("TIMESTAMP")),
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
    return finish(rows, t, lengths, extra, sort, resolution=_decimal_resolution(rows.column("Timestamp")))


def _decimal_resolution(col: pa.ChunkedArray) -> float:
    """The finest step the timestamps are written with: 10^-(most decimals seen), 1 s without decimals."""
    if len(col) == 0:
        return 0.0
    frac = pc.extract_regex(pc.utf8_trim_whitespace(col), r"\.(?P<d>\d+)")
    if frac.null_count == len(frac):
        return 1.0
    digits = pc.max(pc.utf8_length(pc.struct_field(frac, [0]))).as_py()
    return 10.0 ** -int(digits)
