"""The replay loop: release each request at its trace time on a monotonic clock, never early.

A plan (`ReplayPlan`) holds the selected requests of a trace: sliced by a time window,
restricted to some clients, capped in count, lengths fitted to the model's context. The
loop waits for each request's scheduled time (trace time × time_scale from the slice start)
by blocking on the engine's completion queue until shortly before it, then sleeping and
spinning on `time.perf_counter` for the last stretch, submits it when the clock has reached
the scheduled time, and records the actual release time: lateness = actual − scheduled ≥ 0.
In as-fast-as-possible mode every request is scheduled at 0 (a throughput run).

Prompts are synthetic token ids, a pure function of (seed, trace row): the next one is built
while waiting for the current one's time, so building it does not delay releases.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from ..progress import ProgressLine
from .engine import CLOCK, Completion, Engine

POLL_SLACK = 0.002  # stop blocking on the engine this long before a release
SPIN = 0.0004  # sleep until this long before a release, then spin on the clock
STATS_EVERY = 0.25  # seconds between engine memory / KV snapshots


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


def prompt_ids(seed: int, row: int, n: int, vocab_size: int, low: int = 4) -> list[int]:
    """Synthetic prompt of n token ids in [low, vocab_size), keyed by (seed, trace row)."""
    rng = np.random.default_rng([seed, row])
    return rng.integers(low, max(vocab_size, low + 1), size=int(n)).tolist()


@dataclass
class RunRecord:
    """What the loop measured; times are seconds from the run start (`t0` on CLOCK)."""

    plan: ReplayPlan
    t0: float
    released: np.ndarray
    started: np.ndarray
    first_token: np.ndarray
    completed: np.ndarray
    generated: np.ndarray
    preempted: np.ndarray
    status: list
    errors: list
    stats: list  # (time from t0, {name: value}) snapshots
    interrupted: bool
    wall_end: float
    extra: list = field(default_factory=list)  # (pyarrow field, values): more request columns (HTTP replay)


class Progress:
    """One line on stderr: released / done of total, in flight, elapsed vs. trace time."""

    def __init__(self, total: int, span: float, enabled: bool, stream=None):
        self.total, self.span = total, span
        self.line = ProgressLine(enabled, stream)

    @property
    def enabled(self) -> bool:
        return self.line.enabled

    def __call__(self, released: int, done: int, elapsed: float, final: bool = False) -> None:
        frac = done / self.total if self.total else 1.0
        self.line.show(frac, f"released {released:,}/{self.total:,}  done {done:,}  in flight {released - done:,}  "
                             f"{elapsed:7.1f}s of {self.span:.1f}s", final)


def run(engine: Engine, plan: ReplayPlan, *, seed: int = 0, should_stop: Callable[[], bool] = lambda: False,
        progress: Progress | None = None, on_start: Callable[[], None] | None = None) -> RunRecord:
    """Replay `plan` on a started engine; returns what was measured. Stops releasing when
    `should_stop()` turns true, then abandons the requests in flight."""
    n = len(plan)
    nan = np.full(n, np.nan)
    released, started, first, completed = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    generated = np.zeros(n, np.int64)
    preempted = np.zeros(n, bool)
    status = ["not_released"] * n
    errors: list = [None] * n
    stats: list = []
    vocab = engine.vocab_size or 1024
    index = {int(r): i for i, r in enumerate(plan.row)}
    done = 0

    def record(cs: list[Completion], abandoned: bool = False) -> None:
        nonlocal done
        for c in cs:
            i = index[int(c.rid)]
            generated[i] = c.output_tokens
            preempted[i] = c.preempted
            started[i], first[i], completed[i] = c.started - t0, c.first_token - t0, c.completed - t0
            if c.error is not None:
                status[i], errors[i] = ("abandoned" if abandoned else "failed"), c.error
            else:
                status[i] = "completed"
            done += 1

    next_stats = 0.0

    def snapshot(now: float) -> None:
        nonlocal next_stats
        if now >= next_stats:
            s = engine.stats()
            if s:
                stats.append((now - t0, s))
            next_stats = now + STATS_EVERY

    nxt = prompt_ids(seed, int(plan.row[0]), int(plan.input_tokens[0]), vocab)
    if on_start is not None:
        on_start()
    t0 = CLOCK()
    targets = t0 + plan.scheduled
    i = 0
    stopped = False
    while i < n:
        target = targets[i]
        while True:
            now = CLOCK()
            rem = target - now
            if should_stop():
                stopped = True
                break
            if rem <= 0:
                break
            if rem > POLL_SLACK:
                record(engine.poll(min(rem - POLL_SLACK, 0.1)))
                snapshot(CLOCK())
                if progress:
                    progress(i, done, CLOCK() - t0)
            elif rem > SPIN:
                time.sleep(rem - SPIN)
        if stopped:
            break
        t = CLOCK()  # t >= target: the loop above only leaves when the clock has reached it
        engine.add(int(plan.row[i]), nxt, int(plan.output_tokens[i]))
        released[i] = t - t0
        status[i] = "in_flight"
        i += 1
        if i < n:
            nxt = prompt_ids(seed, int(plan.row[i]), int(plan.input_tokens[i]), vocab)
        else:
            nxt = None
    while not stopped and done < i:
        if should_stop():
            stopped = True
            break
        record(engine.poll(0.1))
        snapshot(CLOCK())
        if progress:
            progress(i, done, CLOCK() - t0)
    record(engine.stop(abandon=stopped), abandoned=True)
    for k in range(n):
        if status[k] == "in_flight":
            status[k] = "abandoned"
    if progress:
        progress(i, done, CLOCK() - t0, final=True)
    return RunRecord(plan=plan, t0=t0, released=released, started=started, first_token=first, completed=completed,
                     generated=generated, preempted=preempted, status=status, errors=errors, stats=stats,
                     interrupted=stopped, wall_end=CLOCK() - t0)
