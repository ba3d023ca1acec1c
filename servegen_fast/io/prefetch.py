"""Run an iterator one step ahead in a background thread.

Trace writers use it so the next chunk is generated while the current one is encoded and
written: the Numba kernels and pyarrow's encoders both release the GIL, so the two overlap
on separate cores. At most `depth` items wait in the queue (memory stays bounded), order is
kept, and an exception in the producer is raised in the consumer.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield the items of `items`, produced by a background thread up to `depth` ahead."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for x in items:
                if not put(x):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Failed(e))

    worker = threading.Thread(target=produce, name="servegen-fast-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            x = q.get()
            if x is _DONE:
                return
            if isinstance(x, _Failed):
                raise x.error
            yield x
    finally:
        stop.set()  # the consumer stopped (done, error or closed early): let the producer end
        worker.join()
