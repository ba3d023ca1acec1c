"""HTTP replay of a whole plan: one `Sender` on this process's event loop, or N sending processes.

With `workers=N`, N spawned processes each run a `Sender` with its own event loop and
`ceil(concurrency / N)` connections over every N-th request of the plan (with sessions: the
requests of every N-th session, so that a session's turns stay in one process for closed loop). Once every one has
warmed up, all are given one start time START_DELAY ahead (perf_counter is system-wide on
Linux), and their results are merged back by index.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import signal

import numpy as np

from ...progress import ProgressLine
from ..timing import CLOCK, show_progress
from .options import HttpOptions, run_loop
from .outcomes import merge
from .sender import Sender


async def _run_quietly(sender: Sender, t0_getter) -> None:
    with _quiet_gc():
        await sender.run(t0_getter)


@contextlib.contextmanager
def _quiet_gc():
    """Fewer, smaller cyclic-GC passes during a run: what exists before it is frozen out of the
    collector's view and young-generation passes come 30x less often (a full pass over a large
    heap is a multi-millisecond pause, which would show as release lateness)."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def shares(plan, workers: int) -> list:
    """Plan positions of each worker: round-robin by request, or by session where the plan has them."""
    n = len(plan)
    if plan.session_id is None:
        return [np.arange(w, n, workers) for w in range(workers)]
    _, inv = np.unique(plan.session_id, return_inverse=True)
    who = inv % workers
    return [np.flatnonzero(who == w) for w in range(workers)]


def _worker_process(pipe, wid: int, part: dict, options: HttpOptions, meta: dict, concurrency: int,
                    stop_event) -> None:
    """A sending process: warm up, say ready, wait for the start time, replay its share, send results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and sets stop_event
    try:
        w = Sender(part, options, meta, concurrency, stop_event.is_set)

        async def get_t0() -> float:
            pipe.send(("ready", None))
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, pipe.recv)

        run_loop(_run_quietly(w, get_t0), options.loop)
        pipe.send(("result", w.result()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        pipe.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        pipe.close()


START_DELAY = 0.2  # the start time is set this far ahead of "all workers ready"


def send_plan(plan, options: HttpOptions, meta: dict, *, should_stop=lambda: False, on_start=None,
              progress: ProgressLine | None = None) -> dict:
    """Replay `plan` against the target; returns merged per-request arrays (indexed like the plan).
    `progress` is drawn with one sending process only."""
    n = len(plan)
    workers = max(1, min(int(options.workers), n))
    per_worker = max(1, math.ceil(options.concurrency / workers))
    idx = shares(plan, workers)
    parts = [plan.part(k) for k in idx]
    if workers == 1:
        w = Sender(parts[0], options, meta, per_worker, should_stop)

        async def get_t0() -> float:
            if on_start is not None:
                on_start()
            return CLOCK()

        async def main() -> None:
            prog = None
            if progress is not None:
                span = float(plan.scheduled.max())

                async def report():
                    while True:
                        show_progress(progress, w.out.sent, w.out.done, n, CLOCK() - w.t0, span,
                                      in_flight=w.out.active)
                        await asyncio.sleep(0.25)
                prog = asyncio.get_running_loop().create_task(report())
            try:
                await _run_quietly(w, get_t0)
            finally:
                if prog is not None:
                    prog.cancel()

        _set_nofile(per_worker)
        run_loop(main(), options.loop)
        results = [w.result()]
    else:
        results = _run_processes(parts, options, meta, per_worker, should_stop, on_start)
    return merge(n, results, idx)


def _run_processes(parts, options, meta, per_worker, should_stop, on_start) -> list:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stop_event = ctx.Event()
    _set_nofile(per_worker)
    procs, pipes = [], []
    for wid, part in enumerate(parts):
        a, b = ctx.Pipe()
        p = ctx.Process(target=_worker_process, args=(b, wid, part, options, meta, per_worker, stop_event),
                        daemon=True, name=f"servegen-http-{wid}")
        p.start()
        b.close()
        procs.append(p)
        pipes.append(a)
    try:
        for wid, a in enumerate(pipes):
            kind, payload = a.recv()
            if kind == "error":
                raise RuntimeError(f"HTTP worker {wid} failed to start: {payload}")
        if on_start is not None:
            on_start()
        t0 = CLOCK() + START_DELAY
        for a in pipes:
            a.send(t0)
        results: list = [None] * len(parts)
        left = set(range(len(parts)))
        from multiprocessing.connection import wait

        while left:
            if should_stop():
                stop_event.set()
            ready = wait([pipes[i] for i in left], timeout=0.1)
            for a in ready:
                wid = pipes.index(a)
                try:
                    kind, payload = a.recv()
                except EOFError:
                    raise RuntimeError(f"HTTP worker {wid} ended without results (exit code "
                                       f"{procs[wid].exitcode})") from None
                if kind == "error":
                    raise RuntimeError(f"HTTP worker {wid} failed: {payload}")
                results[wid] = payload
                left.discard(wid)
        return results
    finally:
        stop_event.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def _set_nofile(need: int) -> None:
    """Raise the open-file limit towards the hard limit when the connection limit needs it."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = need + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY
                                                        else want, hard))
    except (ImportError, ValueError, OSError):
        pass
