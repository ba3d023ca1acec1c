"""Release timing shared by every replayer: the one clock, the one wait for a release time,
and the one progress line.

A replayer releases request i at `t0 + scheduled[i]` on CLOCK. It waits by calling
`release_wait` until that returns None (due) or SPIN; each call says how to spend the time
left, so that each replayer keeps doing its own work while a release is far and stops in
time to be exact:

1. (WORK, s) while more than `pacing.work` is left: the replayer does its own work for up to
   s seconds (the on-device loop blocks on the engine's completion queue; the HTTP sender
   sleeps on its event loop, which keeps reading responses), then calls again;
2. (NAP, s) while more than `pacing.spin` is left: a short pause (a `time.sleep`, or one turn
   of the event loop, whose timeouts are too coarse for this stretch), then calls again;
3. (SPIN, s): the replayer spins on CLOCK until the target and releases. The spin is the
   caller's own two lines, because spinning inside a function and returning from it was
   measured to add a few tenths of a microsecond to the median lateness.

So a release is never early. The replayer stamps the release after the wait (`released`,
seconds from t0), and lateness = released − scheduled ≥ 0 measures everything that delayed
it: a late wake-up, a busy event loop, a connection limit, a long engine step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..progress import ProgressLine

# perf_counter: monotonic, sub-microsecond, and system-wide on Linux (CLOCK_MONOTONIC), so worker
# processes and engine threads stamp on the same time line as the release loop.
CLOCK: Callable[[], float] = time.perf_counter

WORK, NAP, SPIN = "work", "nap", "spin"


@dataclass(frozen=True)
class Pacing:
    """Where a replayer's wait for a release switches phase (seconds before the release)."""

    work: float  # do other work until this long before
    spin: float  # nap until this long before, then spin on the clock


# on-device: block on the engine's completion queue until 2 ms before (a wake-up from a blocking
# get can come late), then time.sleep until 0.4 ms before (a sleep leaves the GIL to the engine thread)
ON_DEVICE = Pacing(work=0.002, spin=0.0004)
# HTTP: the event loop's selector rounds timeouts up to 1 ms, so its sleeps stop 1.5 ms early
# and the last stretch yields to the loop (responses keep being read) instead of sleeping
HTTP = Pacing(work=0.0015, spin=0.0002)


def release_wait(target: float, pacing: Pacing) -> tuple[str, float] | None:
    """Where the wait until `target` on CLOCK stands: None once it is due, else (WORK | NAP |
    SPIN, seconds left for that phase) to spend as the module says."""
    rem = target - CLOCK()
    if rem <= 0:
        return None
    if rem > pacing.work:
        return WORK, rem - pacing.work
    if rem > pacing.spin:
        return NAP, rem - pacing.spin
    return SPIN, rem


def show_progress(line: ProgressLine, released: int, done: int, total: int, elapsed: float, span: float,
                  final: bool = False, in_flight: int | None = None) -> None:
    """The replayers' progress line: released and done of total, in flight (default released - done;
    HTTP replay passes its own count, since a request can fail before it is written), elapsed vs.
    the schedule."""
    frac = done / total if total else 1.0
    in_flight = released - done if in_flight is None else in_flight
    line.show(frac, f"released {released:,}/{total:,}  done {done:,}  in flight {in_flight:,}  "
                    f"{elapsed:7.1f}s of {span:.1f}s", final)


class Releases:
    """Which request is released next, and when: `scheduled[i]` (seconds from t0) on CLOCK.

    Open loop: every request at its planned time, in plan order. Closed loop (sessions): a
    session's first request at its planned time; each later turn becomes due only when the
    previous one ends (`ended(i, t)`), at t + think_time × think_scale, and its `scheduled` is
    set then (NaN until then), so lateness counts from that closed-loop release time. A session
    never has two turns in flight. `next()` is the earliest due request (ties: plan order), or
    None while every remaining one waits on a request in flight (or none is left).
    """

    def __init__(self, scheduled, *, closed: bool = False, session_id=None, turn=None, think_time=None,
                 think_scale: float = 1.0):
        import heapq

        import numpy as np

        self._push, self._pop = heapq.heappush, heapq.heappop
        self.scheduled = np.array(scheduled, np.float64)
        n = len(self.scheduled)
        self.follower = np.full(n, -1, np.int64)
        self.closed = bool(closed and n and session_id is not None)
        heads = np.arange(n)
        if self.closed:
            sid, tn = np.asarray(session_id), np.asarray(turn)
            order = np.lexsort((np.arange(n), tn, sid))
            same = sid[order[1:]] == sid[order[:-1]]
            self.follower[order[:-1][same]] = order[1:][same]
            later = np.zeros(n, bool)
            later[order[1:][same]] = True
            self.scheduled[later] = np.nan
            heads = np.flatnonzero(~later)
            heads = heads[np.argsort(self.scheduled[heads], kind="stable")]
            self.think = np.asarray(think_time, np.float64) * float(think_scale)
        self._order = heads.tolist()
        self._k = 0
        self._heap: list = []

    def next(self) -> int | None:
        """The request due first among those that may be released now (not removed)."""
        heap = self._heap
        if self._k < len(self._order):
            i = self._order[self._k]
            if heap and (heap[0][0], heap[0][1]) < (self.scheduled[i], i):
                return heap[0][1]
            return i
        return heap[0][1] if heap else None

    def take(self, i: int) -> None:
        """Request i (the one `next()` gave) is being released."""
        if self._k < len(self._order) and self._order[self._k] == i:
            self._k += 1
        else:
            self._pop(self._heap)

    def ended(self, i: int, t: float) -> float | None:
        """Request i ended at t (s from t0): its session's next turn becomes due; returns when (None: none)."""
        j = int(self.follower[i]) if self.closed else -1
        if j < 0:
            return None
        due = t + float(self.think[j])
        self.scheduled[j] = due
        self._push(self._heap, (due, j))
        return due
