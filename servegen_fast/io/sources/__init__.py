"""Readers of request logs: Azure LLM inference CSV, BurstGPT CSV (v1 and v3), Mooncake JSONL,
and our own Arrow / Parquet traces.

Each reader returns a `RequestLog`: timestamps in seconds from the log's first request (the
original start is kept in `start`), input and output lengths, the other columns usable as a
client key, and a `ReadReport` (rows read, kept, dropped per reason, with the first lines of
each reason). Nothing is dropped silently: with ``on_error="raise"`` (the default) the first
bad row raises `LogFormatError` naming its file and line; with ``on_error="drop"`` bad rows
are counted and skipped. Timestamps that go backwards raise unless ``sort=True``.

One module per format (csv_logs: Azure, BurstGPT; mooncake; trace_log) over `base`.
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import LogFormatError, ReadReport, RequestLog
from .csv_logs import AZURE_COLUMNS, BURSTGPT_COLUMNS, FAILED, read_azure, read_burstgpt
from .mooncake import MOONCAKE_FIELDS, read_mooncake
from .trace_log import read_trace_log

FORMATS = ("azure", "burstgpt", "mooncake", "trace")
ON_ERROR = ("raise", "drop")

__all__ = ["FORMATS", "ON_ERROR", "AZURE_COLUMNS", "BURSTGPT_COLUMNS", "MOONCAKE_FIELDS", "FAILED",
           "LogFormatError", "ReadReport", "RequestLog", "detect_format", "read_log", "read_azure",
           "read_burstgpt", "read_mooncake", "read_trace_log"]


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
             drop_failed: bool = False, block_size: int | None = None) -> RequestLog:
    """Read a request log of the given format ("auto": `detect_format`). `block_size`: tokens per
    Mooncake hash_ids block (None: inferred from the log)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "azure":
        return read_azure(path, on_error=on_error, sort=sort)
    if fmt == "burstgpt":
        return read_burstgpt(path, on_error=on_error, sort=sort, drop_failed=drop_failed)
    if fmt == "mooncake":
        return read_mooncake(path, on_error=on_error, sort=sort, block_size=block_size)
    if fmt == "trace":
        return read_trace_log(path)
    raise ValueError(f"unknown log format {fmt!r}; expected one of {FORMATS} or 'auto'")
