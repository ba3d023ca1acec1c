"""HTTP replay against a server that dies mid-run (issue 19, row 1): the replay ends soon after the
trace does, every request accounted for (completed before the death, failed after), never a hang."""
from __future__ import annotations

import faulthandler
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from servegen_fast.io.trace import trace_schema
from servegen_fast.replay import read_requests
from servegen_fast.replay.api import replay_http
from servegen_fast.testing.fake_server import FakeServer

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("uvloop") is None, reason="uvloop not installed"))]


def _trace(n: int, span: float) -> pa.Table:
    rng = np.random.default_rng(3)
    cols = {"timestamp": np.linspace(0, span, n), "client_id": np.zeros(n, np.uint32),
            "input_tokens": rng.integers(1, 50, n).astype(np.uint32),
            "output_tokens": rng.integers(1, 8, n).astype(np.uint32)}
    return pa.table(cols, schema=trace_schema("language", ("input_tokens", "output_tokens")))


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("concurrency", [1024, 2])
@pytest.mark.parametrize("mode", ["ok", "slow"])
def test_server_dying_mid_run_ends_the_replay(tmp_path, capfd, loop, concurrency, mode):
    n, span, kill_after, timeout = 120, 3.0, 30, 2.0
    srv = FakeServer(mode, delay=0.02)
    url = srv.__enter__()
    def kill():  # once the run is under way: the port closed, its connections reset
        deadline = time.monotonic() + 60
        while srv.requests < kill_after and time.monotonic() < deadline:
            time.sleep(0.005)
        srv.__exit__(None, None, None)

    killer = threading.Thread(target=kill)
    killer.start()
    t = time.monotonic()
    faulthandler.dump_traceback_later(120, exit=True)  # a hang fails the run with every thread's stack
    try:
        s = replay_http(_trace(n, span), tmp_path / "o", target=url, timeout=timeout, concurrency=concurrency,
                        loop=loop, progress=True)
    finally:
        faulthandler.cancel_dump_traceback_later()
        killer.join()
    took = time.monotonic() - t
    assert took < span + timeout + 10, took  # the trace's end plus one timeout (and slack), not a hang
    d = read_requests(tmp_path / "o").to_pydict()
    c = s["counts"]
    assert c["completed"] + c["failed"] + c.get("abandoned", 0) + c.get("not_released", 0) == n
    assert min(c.values()) >= 0  # no negative counts
    assert c["completed"] > 0 and c["failed"] > 0  # some before the death, the rest recorded as failures
    assert set(d["status"]) <= {"completed", "failed", "abandoned", "not_released"}
    shown = capfd.readouterr().err
    assert "released" in shown and "in flight -" not in shown  # the progress line's count stays >= 0
    kinds = {k for k in d["error_kind"] if k}
    assert kinds <= {"connect_error", "connection_closed", "timeout", "stream_error", "protocol_error"}, kinds
