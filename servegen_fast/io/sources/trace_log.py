"""Our own traces read as request logs (for fit and analyze)."""
from __future__ import annotations

import os

import numpy as np

from .base import LogFormatError, ReadReport, RequestLog


def read_trace_log(path: str | os.PathLike) -> RequestLog:
    """One of our own traces (Parquet, Arrow IPC or a partitioned directory). Its clock already
    starts at the trace start, so it is not shifted; `client_id` is a key column."""
    from ..trace import read_trace, trace_metadata

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
    if not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) < 0):
        raise LogFormatError(f"{path}: trace timestamps must be finite, non-negative and ascending")
    cols = {}
    if "client_id" in table.column_names:
        cols["client_id"] = table.column("client_id").to_numpy().astype(np.int64)
    meta = trace_metadata(table.schema)
    duration = meta.get("duration")
    log = RequestLog(timestamp=t, input_tokens=table.column("input_tokens").to_numpy().astype(np.int64),
                     output_tokens=table.column("output_tokens").to_numpy().astype(np.int64), columns=cols,
                     start=0.0, resolution=0.0, report=report,
                     duration=float(duration) if duration else None)
    if meta.get("sessions") and "session_id" in table.column_names:  # block ids derived on read
        from ..blocks import BlockSpec, hash_ids
        spec = BlockSpec.from_metadata(meta, str(path))
        log.blocks, log.block_size = hash_ids(table, spec), spec.block_size
    return log
