"""servegen_fast.distributed.replay on a local Ray instance (2 CPUs) against the fake server:
client shares, merged results equal to a single-process replay's request set, the clock check,
a lost sender, and the CLI with several targets."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray", reason="the distributed extra (ray) is part of the test extra")

import _ray_jobs as J  # noqa: E402
from servegen_fast import cli  # noqa: E402
from servegen_fast.distributed import RaySend, client_shares  # noqa: E402
from servegen_fast.distributed.replay import START_DELAY  # noqa: E402
from servegen_fast.io.trace import trace_schema, write_trace  # noqa: E402
from servegen_fast.replay import read_requests  # noqa: E402
from servegen_fast.replay.api import replay_http  # noqa: E402
from servegen_fast.testing.fake_server import FakeServer  # noqa: E402


def make_trace(n=120, span=1.5, clients=12, seed=3) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {"timestamp": np.sort(rng.uniform(0, span, n)), "client_id": rng.integers(0, clients, n).astype(np.uint32),
            "input_tokens": rng.integers(1, 50, n).astype(np.uint32),
            "output_tokens": rng.integers(1, 8, n).astype(np.uint32)}
    return pa.table(cols, schema=trace_schema("language", ("input_tokens", "output_tokens")))


@pytest.fixture(scope="module")
def local_ray():
    yield J.init_local_ray()
    ray.shutdown()


def test_client_shares_are_disjoint_balanced_and_deterministic():
    cid = np.random.default_rng(1).zipf(1.6, 5000).astype(np.uint32) % 300
    shares = client_shares(cid, 3)
    idx = np.concatenate(shares)
    assert np.array_equal(np.sort(idx), np.arange(len(cid)))  # every request, once
    owners = [set(cid[s].tolist()) for s in shares]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])  # a client in one share
    sizes = [len(s) for s in shares]
    biggest = np.bincount(cid).max()
    assert max(sizes) - min(sizes) <= biggest  # greedy: within one client of balance
    assert all(np.array_equal(a, b) for a, b in zip(shares, client_shares(cid.copy(), 3)))


def _rows(out) -> dict:
    t = read_requests(out).to_pydict()
    return {r: (s, c, i, o, g) for r, s, c, i, o, g in zip(t["request"], t["status"], t["client_id"], t["input_tokens"],
                                                          t["output_tokens"], t["generated_tokens"])}


def test_merged_results_equal_single_process_request_set(local_ray, tmp_path):
    table = make_trace()
    with FakeServer("ok") as url:
        single = replay_http(table, tmp_path / "one", target=url, loop="asyncio")
        logs = []
        send = RaySend(workers=2, log=logs.append)
        merged = replay_http(table, tmp_path / "ray", target=url, loop="asyncio", send=send)
    assert single["complete"] and merged["complete"]
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "ray")
    assert a == b and len(a) == len(table) and {v[0] for v in b.values()} == {"completed"}
    assert merged["counts"] == single["counts"]
    assert len(send.offsets) == 2 and all(abs(o["offset_s"]) < 0.005 for o in send.offsets)
    assert sum("clock offset" in m for m in logs) == 2
    meta = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert "senders" in json.dumps(meta)
    lateness = read_requests(tmp_path / "ray").column("lateness").to_numpy()
    assert np.all(lateness >= 0) and np.max(lateness) < 0.5  # one agreed start, never early


def test_clock_offset_past_tolerance_refuses(local_ray, tmp_path):
    table = make_trace(n=20)
    with FakeServer("ok") as url:
        with pytest.raises(RuntimeError, match=r"clock is [+-][0-9.]+ ms off the driver's, past the tolerance of "
                                               r"0\.000 ms.*nothing was sent"):
            replay_http(table, tmp_path / "r", target=url, loop="asyncio", send=RaySend(workers=2, tolerance=1e-9))


def test_lost_sender_marks_its_requests_and_keeps_the_rest(local_ray, tmp_path):
    table = make_trace(n=200, span=3.0)
    send = RaySend(workers=2)

    def kill_one():
        while len(send.offsets) < 2:  # both ready and their clocks checked
            time.sleep(0.05)
        time.sleep(START_DELAY + 1.0)  # past the start, mid-run (3 s of trace)
        ray.kill(send.actors[1])

    killer = threading.Thread(target=kill_one)
    with FakeServer("ok") as url:
        killer.start()
        summary = replay_http(table, tmp_path / "r", target=url, loop="asyncio", send=send)
        killer.join()
    assert not summary["complete"]
    t = read_requests(tmp_path / "r").to_pydict()
    shares = client_shares(table.column("client_id").to_numpy(), 2)
    status = np.array(t["status"])
    assert set(status[shares[0]]) == {"completed"}  # the surviving sender's rows are all there
    assert set(status[shares[1]]) == {"not_released"}
    assert all(e.startswith("sender 1 lost") for e in np.array(t["error"], object)[shares[1]])


def test_cli_several_targets(local_ray, tmp_path, capsys):
    trace = tmp_path / "t.arrow"
    table = make_trace(n=60)
    write_trace(table.to_batches(), trace, table.schema)
    with FakeServer("ok") as u1, FakeServer("ok") as u2:
        rc = cli.main(["replay", str(trace), "--target", f"{u1},{u2}", "--ray", "--workers", "2", "--loop",
                       "asyncio", "-o", str(tmp_path / "r"), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["counts"]["completed"] == 60


def test_a_dead_second_target_is_refused_before_sending(local_ray, tmp_path):
    table = make_trace(n=10)
    with FakeServer("ok") as url:
        with pytest.raises(RuntimeError, match=r"target http://127\.0\.0\.1:1 does not answer"):
            replay_http(table, tmp_path / "r", target=url, loop="asyncio",
                        send=RaySend(workers=2, targets=[url, "http://127.0.0.1:1"]))


def test_cli_several_targets_need_ray(tmp_path, capsys):
    trace = tmp_path / "t.arrow"
    table = make_trace(n=10)
    write_trace(table.to_batches(), trace, table.schema)
    with pytest.raises(SystemExit, match="several --target URLs need --ray"):
        cli.main(["replay", str(trace), "--target", "http://127.0.0.1:1,http://127.0.0.1:2", "-o",
                  str(tmp_path / "r")])


def test_cli_unreachable_address_is_one_line(tmp_path):
    import subprocess
    import sys

    trace = tmp_path / "t.arrow"
    table = make_trace(n=10)
    write_trace(table.to_batches(), trace, table.schema)
    with FakeServer("ok") as url:
        r = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "replay", str(trace), "--target", url, "--ray",
                            "127.0.0.1:1", "--workers", "2", "-o", str(tmp_path / "r"), "-q"],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[-1]]  # one line
    assert r.stderr.startswith("error: Ray cluster at 127.0.0.1:1 is unreachable")


def test_sessions_replay_closed_loop_across_sender_actors(local_ray, tmp_path):
    """Sessions of two clients on two actors: closed-loop releases and cached tokens as in one process."""
    import test_session_replay as S

    table = S.session_trace()
    cid = np.zeros(table.num_rows, np.uint32)
    cid[2] = 1  # session 300 (one turn) on its own client: it no longer shares client 0's prompt
    table = table.set_column(1, table.schema.field("client_id"), pa.array(cid, pa.uint32()))
    send = RaySend(workers=2)
    with FakeServer("ok", cache_tokens=1 << 20, cache_block_size=S.BS) as url:
        s = replay_http(table, tmp_path / "out", target=url, seed=S.SEED, send=send)
    tab = read_requests(tmp_path / "out")
    S.check_closed_loop(tab)
    expected = {**S.EXPECTED_CACHED, 2: 0}
    assert tab.column("cached_tokens").to_pylist() == tab.column("expected_cached_tokens").to_pylist() == \
        [expected[r] for r in tab.column("request").to_pylist()]
    assert s["sessions"]["completed"] == 3 and s["options"]["release"] == "closed"
