"""What to replay: the requests of a trace selected (time window, clients, count), scheduled
(trace time x time scale from the window start, or all at 0) and fitted to the model's context.

With sessions (session_id, turn, think_time, prefix_id columns and the trace's block metadata)
the plan also carries each request's session and turn, its think time, and the content ids of
its prompt blocks (io/blocks.py `content_ids`), and releases are closed-loop by default: a
session's first selected turn at its trace time, each later one at the previous turn's
completion plus its think time (timing.Releases)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .prompts import Prompt


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
    # sessions (None without): per request, and the prompt's block content ids (ragged: block_off)
    session_id: np.ndarray | None = None  # uint64
    turn: np.ndarray | None = None  # int64
    think_time: np.ndarray | None = None  # float64, seconds after the previous turn's completion
    prefix_id: np.ndarray | None = None  # int64, -1: none
    block_off: np.ndarray | None = None  # int64 [n + 1]
    block_ids: np.ndarray | None = None  # int64 content ids
    block_spec: object = None  # io.blocks.BlockSpec of the trace (expected cache hits)
    closed_loop: bool = False
    think_scale: float = 1.0  # think times are multiplied by this (the time scale; 0 with afap)

    def __len__(self) -> int:
        return len(self.row)

    def prompt(self, k: int) -> Prompt:
        """What request k's prompt is keyed by (prompts.Prompt)."""
        if self.block_ids is None:
            return Prompt(int(self.row[k]))
        return Prompt(int(self.row[k]), self.block_ids[self.block_off[k]:self.block_off[k + 1]],
                      self.block_spec.block_size)

    def part(self, idx: np.ndarray) -> dict:
        """The columns a sender needs for the requests at plan positions `idx` (in release order)."""
        idx = np.asarray(idx, np.int64)
        d = {"row": self.row[idx], "scheduled": self.scheduled[idx], "input_tokens": self.input_tokens[idx],
             "output_tokens": self.output_tokens[idx], "closed_loop": self.closed_loop,
             "think_scale": self.think_scale}
        if self.session_id is not None:
            d.update(session_id=self.session_id[idx], turn=self.turn[idx], think_time=self.think_time[idx])
        if self.block_ids is not None:
            lo, hi = self.block_off[idx], self.block_off[idx + 1]
            off = np.zeros(len(idx) + 1, np.int64)
            np.cumsum(hi - lo, out=off[1:])
            take = np.repeat(lo - off[:-1], hi - lo) + np.arange(off[-1])
            d.update(block_off=off, block_ids=self.block_ids[take], block_size=self.block_spec.block_size)
        return d


def part_prompt(part: dict, k: int) -> Prompt:
    """`ReplayPlan.prompt` for request k of a part."""
    if "block_ids" not in part:
        return Prompt(int(part["row"][k]))
    off = part["block_off"]
    return Prompt(int(part["row"][k]), part["block_ids"][off[k]:off[k + 1]], part["block_size"])


SESSION_COLUMNS = ("session_id", "turn", "think_time", "prefix_id")
RELEASES = ("auto", "closed", "open")


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


def selected_rows(ts: np.ndarray, client_id: np.ndarray, start, end, clients) -> np.ndarray:
    """Rows with start <= timestamp < end (either None: unbounded) of the given clients (None: all)."""
    keep = np.ones(len(ts), bool)
    if start is not None:
        keep &= ts >= start
    if end is not None:
        keep &= ts < end
    if clients is not None:
        keep &= np.isin(client_id, np.asarray(list(clients), dtype=np.int64))
    return np.flatnonzero(keep)


def make_plan(table: pa.Table, *, start: float | None = None, end: float | None = None,
              clients=None, max_requests: int | None = None, time_scale: float = 1.0,
              afap: bool = False, max_model_len: int | None = None, release: str = "auto",
              source: str = "trace") -> ReplayPlan:
    """Select and schedule the requests of `table` (a trace).

    Window [start, end) in trace seconds (scheduled offsets count from `start`, else from 0);
    `clients`: keep only these client ids; `max_requests`: the first N after that. Lengths
    are fitted to `max_model_len` (prompt + output ≤ it; output kept, prompt cut first;
    both at least 1) and the trace's own lengths are kept beside the served ones. `release`:
    "closed" (turns at the previous turn's completion + think time; needs sessions), "open"
    (every request at its trace time), "auto" (closed where the trace has sessions).
    """
    check_trace(table, source)
    if release not in RELEASES:
        raise ValueError(f"release must be one of {RELEASES}, got {release!r}")
    has_sessions = all(c in table.column_names for c in SESSION_COLUMNS)
    if release == "closed" and not has_sessions:
        raise ValueError(f"{source}: closed-loop release needs sessions (columns {', '.join(SESSION_COLUMNS)}; "
                         "generate with --sessions)")
    if not time_scale > 0:
        raise ValueError(f"time scale must be positive, got {time_scale}")
    ts = table.column("timestamp").to_numpy()
    cid = table.column("client_id").to_numpy().astype(np.uint32)
    rows = selected_rows(ts, cid, start, end, clients)
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
    closed = has_sessions and release != "open"
    opts = {"start": start, "end": end, "clients": None if clients is None else sorted(int(c) for c in clients),
            "max_requests": max_requests, "time_scale": time_scale, "afap": afap, "max_model_len": max_model_len,
            "release": "closed" if closed else "open"}
    plan = ReplayPlan(row=rows.astype(np.int64), client_id=cid[rows], arrival=arrival, scheduled=scheduled,
                      trace_input=tin.astype(np.uint32), trace_output=tout.astype(np.uint32),
                      input_tokens=inp.astype(np.uint32), output_tokens=out.astype(np.uint32), options=opts,
                      closed_loop=closed, think_scale=0.0 if afap else float(time_scale))
    if has_sessions:
        _add_sessions(plan, table, rows, source)
    return plan


def _add_sessions(plan: ReplayPlan, table: pa.Table, rows: np.ndarray, source: str) -> None:
    """Session columns of the selected rows, and their prompts' block content ids where the
    trace's metadata allows deriving them (io/blocks.py)."""
    from ..io.blocks import BlockSpec, content_ids
    from ..io.trace import trace_metadata

    sub = table.select(list(SESSION_COLUMNS) + ["client_id", "input_tokens"]).take(pa.array(rows))
    col = lambda n: sub.column(n).to_numpy(zero_copy_only=False)  # noqa: E731
    plan.session_id = col("session_id").astype(np.uint64)
    plan.turn = col("turn").astype(np.int64)
    plan.think_time = np.nan_to_num(col("think_time").astype(np.float64), nan=0.0)
    pid = sub.column("prefix_id")
    plan.prefix_id = pid.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pid.null_count:
        plan.prefix_id[pid.is_null().to_numpy(zero_copy_only=False)] = -1
    meta = trace_metadata(table.schema)
    if meta.get("sessions"):
        plan.block_spec = BlockSpec.from_metadata(meta, source)
        ids = content_ids(sub, plan.block_spec)
        plan.block_off = ids.offsets.to_numpy().astype(np.int64)
        plan.block_ids = ids.values.to_numpy().astype(np.int64)
