"""prefetch: order kept, errors raised in the consumer, the producer stops when the consumer does."""
from __future__ import annotations

import threading
import time

import pytest

from servegen_fast.io.prefetch import prefetch


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_order_and_completeness(depth):
    assert list(prefetch(iter(range(1000)), depth)) == list(range(1000))


def test_runs_in_a_background_thread_ahead_of_the_consumer():
    produced = []

    def items():
        for i in range(3):
            produced.append((i, threading.current_thread().name))
            yield i

    it = prefetch(items(), depth=1)
    assert next(it) == 0
    deadline = time.monotonic() + 10
    while len(produced) < 2 and time.monotonic() < deadline:  # item 1 is made before it is asked for
        time.sleep(0.01)
    assert len(produced) >= 2
    assert all(name == "servegen-fast-prefetch" for _, name in produced)
    assert list(it) == [1, 2]


def test_producer_error_reaches_the_consumer_after_earlier_items():
    def items():
        yield 1
        raise KeyError("boom")

    it = prefetch(items())
    assert next(it) == 1
    with pytest.raises(KeyError, match="boom"):
        next(it)


def test_closing_the_consumer_stops_the_producer():
    made = []

    def items():
        for i in range(10_000):
            made.append(i)
            yield i

    it = prefetch(items(), depth=2)
    assert next(it) == 0
    it.close()  # joins the producer thread
    assert len(made) <= 5
    assert not any(t.name == "servegen-fast-prefetch" for t in threading.enumerate())
