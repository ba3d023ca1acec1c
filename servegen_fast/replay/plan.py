"""What to replay: the requests of a trace selected (time window, clients, count), scheduled
(trace time x time scale from the window start, or all at 0) and fitted to the model's context."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa


@dataclass
class ReplayPlan:
    """Selected requests of a trace, in release order."""

    row: np.ndarray  # int64 row in the trace
    client_id: np.ndarray  # uint32
    arrival: np.ndarray  # float64 trace timestamp (s)
    scheduled: np.ndarray  # float64 release offset from the run start (s)
    trace_input: np.ndarray  # uint32 lengths in the trace
    trace_output: np.ndarray
    input_tokens: np.ndarray  # uint32 lengths served (fitted to the model's context)
    output_tokens: np.ndarray
    options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.row)


REQUIRED = {"timestamp": pa.float64(), "client_id": pa.uint32(), "input_tokens": pa.uint32(),
            "output_tokens": pa.uint32()}


def check_trace(table: pa.Table, source: str = "trace") -> None:
    """Clear errors for a table that is not a trace (docs/trace-schema.md)."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: not a servegen-fast trace: missing column(s) {', '.join(missing)} "
                         f"(has {', '.join(table.column_names) or 'no columns'})")
    for name in REQUIRED:
        t = table.schema.field(name).type
        ok = pa.types.is_floating(t) if name == "timestamp" else pa.types.is_integer(t)
        if not ok:
            raise ValueError(f"{source}: column {name!r} has type {t}, expected {REQUIRED[name]}")
        if table.column(name).null_count:
            raise ValueError(f"{source}: column {name!r} has null values")
    ts = table.column("timestamp").to_numpy()
    if len(ts) and not np.all(np.isfinite(ts)):
        raise ValueError(f"{source}: timestamps must be finite")
    if len(ts) > 1 and np.any(np.diff(ts) < 0):
        raise ValueError(f"{source}: timestamps are not in time order")
    for name in ("input_tokens", "output_tokens"):
        v = table.column(name).to_numpy()
        if len(v) and v.min() < 0:
            raise ValueError(f"{source}: column {name!r} has negative values")


def make_plan(table: pa.Table, *, start: float | None = None, end: float | None = None,
              clients=None, max_requests: int | None = None, time_scale: float = 1.0,
              afap: bool = False, max_model_len: int | None = None, source: str = "trace") -> ReplayPlan:
    """Select and schedule the requests of `table` (a trace).

    Window [start, end) in trace seconds (scheduled offsets count from `start`, else from 0);
    `clients`: keep only these client ids; `max_requests`: the first N after that. Lengths
    are fitted to `max_model_len` (prompt + output ≤ it; output kept, prompt cut first;
    both at least 1) and the trace's own lengths are kept beside the served ones.
    """
    check_trace(table, source)
    if not time_scale > 0:
        raise ValueError(f"time scale must be positive, got {time_scale}")
    ts = table.column("timestamp").to_numpy()
    keep = np.ones(len(ts), bool)
    if start is not None:
        keep &= ts >= start
    if end is not None:
        keep &= ts < end
    cid = table.column("client_id").to_numpy().astype(np.uint32)
    if clients is not None:
        keep &= np.isin(cid, np.asarray(list(clients), dtype=np.int64))
    rows = np.flatnonzero(keep)
    if max_requests is not None:
        rows = rows[:max_requests]
    if len(rows) == 0:
        what = "after slicing" if (start, end, clients, max_requests) != (None, None, None, None) else ""
        raise ValueError(f"{source}: no requests to replay {what}".rstrip())
    arrival = ts[rows]
    origin = float(start) if start is not None else 0.0
    scheduled = np.zeros(len(rows)) if afap else (arrival - origin) * time_scale
    tin = table.column("input_tokens").to_numpy()[rows].astype(np.int64)
    tout = table.column("output_tokens").to_numpy()[rows].astype(np.int64)
    out = np.maximum(tout, 1)
    inp = np.maximum(tin, 1)
    if max_model_len:
        if max_model_len < 2:
            raise ValueError(f"max model length must be at least 2 tokens, got {max_model_len}")
        out = np.minimum(out, max_model_len - 1)
        inp = np.minimum(inp, max_model_len - out)
    opts = {"start": start, "end": end, "clients": None if clients is None else sorted(int(c) for c in clients),
            "max_requests": max_requests, "time_scale": time_scale, "afap": afap, "max_model_len": max_model_len}
    return ReplayPlan(row=rows.astype(np.int64), client_id=cid[rows], arrival=arrival, scheduled=scheduled,
                      trace_input=tin.astype(np.uint32), trace_output=tout.astype(np.uint32),
                      input_tokens=inp.astype(np.uint32), output_tokens=out.astype(np.uint32), options=opts)
