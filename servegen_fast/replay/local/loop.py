"""The on-device release loop: release each request of a plan to an engine at its scheduled
time, never early, and record what the engine reports.

The wait for each release is `timing.release_wait` with the ON_DEVICE pacing: the loop blocks
on the engine's completion queue (recording the requests that end, the engine's memory / KV
snapshots and the progress line) until shortly before the release, sleeps, then spins on the
clock, submits the request once the clock has reached its time and records the actual release
time: lateness = released − scheduled ≥ 0. In as-fast-as-possible mode every request is
scheduled at 0 (a throughput run).

Prompts are synthetic token ids, a pure function of (seed, trace row): the next one is built
while waiting for the current one's time, so building it does not delay releases.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ...progress import ProgressLine
from ..plan import ReplayPlan
from ..prompts import token_prompt
from ..results import RunRecord
from ..timing import CLOCK, NAP, ON_DEVICE, WORK, release_wait, show_progress
from .engine import Completion, Engine

POLL_MAX = 0.1  # block on the engine at most this long at a time (stop checks, snapshots, progress)
STATS_EVERY = 0.25  # seconds between engine memory / KV snapshots


def run(engine: Engine, plan: ReplayPlan, *, seed: int = 0, should_stop: Callable[[], bool] = lambda: False,
        progress: ProgressLine | None = None, on_start: Callable[[], None] | None = None) -> RunRecord:
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
    vocab = engine.vocab_size or 1024  # an engine that does not say: the tiny model's
    index = {int(r): i for i, r in enumerate(plan.row)}
    span = float(plan.scheduled.max())
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

    def report() -> None:  # after each engine poll
        snapshot(CLOCK())
        if progress is not None:
            show_progress(progress, i, done, n, CLOCK() - t0, span)

    def prompt(k: int) -> list[int]:  # the ids HTTP replay sends for the same (seed, row)
        return token_prompt(seed, int(plan.row[k]), int(plan.input_tokens[k]), vocab).tolist()

    nxt = prompt(0)
    if on_start is not None:
        on_start()
    t0 = CLOCK()
    targets = t0 + plan.scheduled
    i = 0
    stopped = False
    while i < n:
        target = targets[i]
        while (step := release_wait(target, ON_DEVICE)) is not None:
            if should_stop():
                break
            phase, seconds = step
            if phase == WORK:
                record(engine.poll(min(seconds, POLL_MAX)))
                report()
            elif phase == NAP:
                time.sleep(seconds)
            else:  # SPIN, inline (see timing)
                while CLOCK() < target:
                    pass
                break
        if should_stop():  # during the wait, or with the request already due
            stopped = True
            break
        t = CLOCK()  # t >= target: the wait above ends only once the clock has reached it
        engine.add(int(plan.row[i]), nxt, int(plan.output_tokens[i]))
        released[i] = t - t0
        status[i] = "in_flight"
        i += 1
        if i < n:
            nxt = prompt(i)
        else:
            nxt = None
    while not stopped and done < i:
        if should_stop():
            stopped = True
            break
        record(engine.poll(POLL_MAX))
        report()
    record(engine.stop(abandon=stopped), abandoned=True)
    for k in range(n):
        if status[k] == "in_flight":
            status[k] = "abandoned"
    if progress is not None:
        show_progress(progress, i, done, n, CLOCK() - t0, span, final=True)
    return RunRecord(plan=plan, t0=t0, released=released, started=started, first_token=first, completed=completed,
                     generated=generated, preempted=preempted, status=status, errors=errors, stats=stats,
                     interrupted=stopped, wall_end=CLOCK() - t0)
