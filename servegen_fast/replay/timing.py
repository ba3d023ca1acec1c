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
