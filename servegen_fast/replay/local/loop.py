"""The on-device release loop: release each request of a plan to an engine at its scheduled
time, never early, and record what the engine reports.

The wait for each release is `timing.release_wait` with the ON_DEVICE pacing: the loop blocks
on the engine's completion queue (recording the requests that end, the engine's memory / KV
snapshots and the progress line) until shortly before the release, sleeps, then spins on the
clock, submits the request once the clock has reached its time and records the actual release
time: lateness = released − scheduled ≥ 0. In as-fast-as-possible mode every request is
scheduled at 0 (a throughput run). Closed loop (sessions): a later turn is due at the previous
turn's completion plus its think time (`timing.Releases`); a completion seen while waiting can
make another request due first, so the next request is chosen again after every engine poll.

Prompts are synthetic token ids (prompts.py; with sessions keyed by block content ids): the
next one is built while waiting for its time, so building it does not delay releases.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ...progress import ProgressLine
from ..plan import ReplayPlan
from ..prompts import token_prompt
from ..results import RunRecord
from ..timing import CLOCK, NAP, ON_DEVICE, WORK, Releases, release_wait, show_progress
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
    cached = np.full(n, -1, np.int64)
    preempted = np.zeros(n, bool)
    status = ["not_released"] * n
    errors: list = [None] * n
    stats: list = []
    vocab = engine.vocab_size or 1024  # an engine that does not say: the tiny model's
    index = {int(r): i for i, r in enumerate(plan.row)}
    span = float(plan.scheduled.max())
    done = 0
    rel = Releases(plan.scheduled, closed=plan.closed_loop, session_id=plan.session_id, turn=plan.turn,
                   think_time=plan.think_time, think_scale=plan.think_scale)

    def record(cs: list[Completion], abandoned: bool = False) -> None:
        nonlocal done
        for c in cs:
            i = index[int(c.rid)]
            generated[i] = c.output_tokens
            preempted[i] = c.preempted
            cached[i] = c.cached_tokens
            started[i], first[i], completed[i] = c.started - t0, c.first_token - t0, c.completed - t0
            if c.error is not None:
                status[i], errors[i] = ("abandoned" if abandoned else "failed"), c.error
            else:
                status[i] = "completed"
            done += 1
            if not abandoned:
                rel.ended(i, completed[i])

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
            show_progress(progress, sent, done, n, CLOCK() - t0, span)

    def prompt(k: int) -> list[int]:  # the ids HTTP replay sends for the same request
        return token_prompt(seed, plan.prompt(k), int(plan.input_tokens[k]), vocab).tolist()

    built = (-1, None)  # (request, its prompt), built ahead
    if n:
        k0 = rel.next()
        built = (k0, prompt(k0))
    if on_start is not None:
        on_start()
    t0 = CLOCK()
    sent = 0
    stopped = False
    while sent < n:
        i = rel.next()
        if i is None:  # every remaining turn waits on one in flight
            if should_stop():
                stopped = True
                break
            if done >= sent:  # nothing in flight: the rest can never become due
                break
            record(engine.poll(POLL_MAX))
            report()
            continue
        if built[0] != i:
            built = (i, prompt(i))
        target = t0 + rel.scheduled[i]
        changed = False
        while (step := release_wait(target, ON_DEVICE)) is not None:
            if should_stop():
                break
            phase, seconds = step
            if phase == WORK:
                record(engine.poll(min(seconds, POLL_MAX)))
                report()
                if rel.next() != i:  # a completion made an earlier turn due
                    changed = True
                    break
            elif phase == NAP:
                time.sleep(seconds)
            else:  # SPIN, inline (see timing)
                while CLOCK() < target:
                    pass
                break
        if should_stop():  # during the wait, or with the request already due
            stopped = True
            break
        if changed:
            continue
        t = CLOCK()  # t >= target: the wait above ends only once the clock has reached it
        rel.take(i)
        engine.add(int(plan.row[i]), built[1], int(plan.output_tokens[i]))
        released[i] = t - t0
        status[i] = "in_flight"
        sent += 1
        nxt = rel.next()
        if nxt is not None:
            built = (nxt, prompt(nxt))
    while not stopped and done < sent:
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
        show_progress(progress, sent, done, n, CLOCK() - t0, span, final=True)
    return RunRecord(plan=plan, t0=t0, scheduled=rel.scheduled, released=released, started=started, first_token=first, completed=completed,
                     generated=generated, preempted=preempted, status=status, errors=errors, stats=stats,
                     interrupted=stopped, wall_end=CLOCK() - t0, cached=cached)
