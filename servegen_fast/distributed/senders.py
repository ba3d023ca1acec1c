"""One HTTP sender as a Ray actor: the sending process of `replay.http.workers`, on any node.

The actor holds its share of the plan and a `Sender`; `run()` warms the connections, says
ready, waits for `start(at)` (a wall-clock time, translated to this machine's perf_counter),
releases its requests and returns the raw per-request results. `now()` answers the driver's
clock-offset probes while `run()` is waiting (the actor is threaded).
"""
from __future__ import annotations

import asyncio
import threading
import time

from ..replay.http.options import HttpOptions, run_loop
from ..replay.http.sender import Sender
from ..replay.http.workers import _quiet_gc, _set_nofile
from ..replay.timing import CLOCK


class SenderActor:
    """Wrapped with `ray.remote(max_concurrency=...)` by the driver (`replay.py`)."""

    def __init__(self, part: dict, options: HttpOptions, meta: dict, concurrency: int):
        _set_nofile(concurrency)
        self._stop = threading.Event()
        self._go = threading.Event()
        self._ready = threading.Event()
        self._at: float | None = None
        self.sender = Sender(part, options, meta, concurrency, self._stop.is_set)
        self.loop_kind = options.loop

    def now(self) -> float:
        return time.time()

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def start(self, at: float) -> None:
        """Release from wall-clock time `at` (this machine's clock, offset already applied)."""
        self._at = at
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()

    def run(self) -> dict:
        async def t0() -> float:
            self._ready.set()
            await asyncio.get_running_loop().run_in_executor(None, self._go.wait)
            if self._at is None:  # stopped before the start
                return CLOCK()
            return CLOCK() + (self._at - time.time())

        async def main() -> None:
            with _quiet_gc():
                await self.sender.run(t0)

        run_loop(main(), self.loop_kind)
        return self.sender.result()
