"""The Ray code paths on a two-node cluster on this machine (a head and a second `ray start`
node, one CPU each): partitions spread over both nodes with the single-machine bytes, resume
after the driver is killed, senders on both nodes merged into the single-process result, and
(last: it leaves one node) a whole node killed mid-run, its partitions redone on the other."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the distributed extra (ray) is part of the test extra")

import _ray_jobs as J  # noqa: E402
from servegen_fast.distributed import RaySend, generate_on_ray  # noqa: E402
from servegen_fast.distributed.local_cluster import LocalCluster  # noqa: E402
from servegen_fast.replay import read_requests  # noqa: E402
from servegen_fast.replay.api import replay_http  # noqa: E402
from servegen_fast.testing.fake_server import FakeServer  # noqa: E402

ray.cloudpickle.register_pickle_by_value(J)
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(nodes=2, cpus=1) as c:
        os.environ["RAY_AUTH_MODE"] = "disabled"  # the local cluster's mode (loopback only)
        ray.init(address=c.address, log_to_driver=False)
        try:
            yield c
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    return J.reference(tmp_path_factory.mktemp("single") / "trace")


def test_two_nodes_generate_the_single_machine_bytes(cluster, expected, tmp_path):
    assert sum(n["Alive"] for n in ray.nodes()) == 2
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    generate_on_ray(J.JOB, tmp_path / "t", partition="hour", task_hook=J.RecordNode(nodes))
    assert J.same_files(expected, tmp_path / "t") == []
    assert len({p.read_text() for p in nodes.iterdir()}) == 2  # both nodes did partitions


DRIVER = """
import sys, ray
sys.path.insert(0, {here!r})
import _ray_jobs as J
ray.cloudpickle.register_pickle_by_value(J)
from servegen_fast.distributed import generate_on_ray
generate_on_ray(J.JOB, {out!r}, partition="hour", address={address!r}, task_hook=J.Hang(2, 120))
"""


def test_resume_after_the_driver_is_killed(cluster, expected, tmp_path):
    out = tmp_path / "t"
    code = DRIVER.format(here=str(HERE), out=str(out), address=cluster.address)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if out.is_dir() and (J.manifest(out) or {"parts": []})["parts"][1:]:
                break
            assert proc.poll() is None, "the driver ended early"
            time.sleep(0.2)
        else:
            pytest.fail("partitions 0 and 1 were not written in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver stops mid-run (its hanging tasks die with it)
        proc.wait()
    kept = J.manifest(out)
    assert not kept["complete"] and [p["index"] for p in kept["parts"]] == [0, 1]
    done = generate_on_ray(J.JOB, out, partition="hour")
    assert done.reused_partitions == 2
    assert J.same_files(expected, out) == []


def test_senders_on_two_nodes_merge_to_the_single_process_result(cluster, tmp_path):
    from test_distributed_replay import _rows, make_trace

    table = make_trace(n=100)
    with FakeServer("ok") as url:
        single = replay_http(table, tmp_path / "one", target=url, loop="asyncio")
        send = RaySend(workers=2)
        merged = replay_http(table, tmp_path / "ray", target=url, loop="asyncio", send=send)
    assert single["complete"] and merged["complete"]
    assert len({o["node"] for o in send.offsets}) == 2  # spread over both nodes
    assert _rows(tmp_path / "one") == _rows(tmp_path / "ray")
    assert np.all(read_requests(tmp_path / "ray").column("lateness").to_numpy() >= 0)


def test_a_node_killed_mid_run_loses_nothing(cluster, expected, tmp_path):
    """Kept last in the module: the second node does not come back."""
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
    marker = tmp_path / "hanging"
    killed = threading.Event()

    def kill_when_busy():
        end = time.monotonic() + 120
        while time.monotonic() < end and not marker.exists():
            time.sleep(0.1)
        if marker.exists():
            cluster.kill_node(1)  # the machine running a partition fails (raylet, workers and all)
            killed.set()

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    done = generate_on_ray(J.JOB, tmp_path / "t", partition="hour", task_hook=J.HangOffHead(head, marker))
    killer.join(timeout=5)
    assert killed.is_set(), "no partition ran on the second node"
    assert done.manifest["complete"] and done.reused_partitions == 0
    assert J.same_files(expected, tmp_path / "t") == []
    # Ray marks a killed node dead only after its health checks time out: wait for that, bounded
    deadline = time.monotonic() + 60
    while sum(n["Alive"] for n in ray.nodes()) != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sum(n["Alive"] for n in ray.nodes()) == 1
