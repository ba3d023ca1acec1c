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
from typing import Callable

import numpy as np

from ...progress import ProgressLine
from ..plan import ReplayPlan
from ..results import RunRecord
from ..timing import CLOCK
from .engine import Completion, Engine

POLL_SLACK = 0.002  # stop blocking on the engine this long before a release
SPIN = 0.0004  # sleep until this long before a release, then spin on the clock
STATS_EVERY = 0.25  # seconds between engine memory / KV snapshots


def prompt_ids(seed: int, row: int, n: int, vocab_size: int, low: int = 4) -> list[int]:
    """Synthetic prompt of n token ids in [low, vocab_size), keyed by (seed, trace row)."""
    rng = np.random.default_rng([seed, row])
    return rng.integers(low, max(vocab_size, low + 1), size=int(n)).tolist()


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
