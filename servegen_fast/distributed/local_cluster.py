"""A Ray cluster of several nodes on this machine (`ray start` processes), for tests and benchmarks.

Each node is one `ray start --block` process, stopped by its own process id (never `ray
stop`, which ends every Ray process on the machine).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 60.0
STOP_GRACE = 3.0  # then SIGKILL: a node otherwise drains for 30 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """`nodes` Ray nodes of `cpus` CPUs each on 127.0.0.1: a head and nodes - 1 workers."""

    def __init__(self, nodes: int = 2, cpus: int = 1, object_store_mb: int = 128):
        self.nodes, self.cpus, self.store = nodes, cpus, object_store_mb << 20
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.tmp = tempfile.mkdtemp(prefix="sgf-ray-")
        self._ray = str(Path(sys.executable).with_name("ray"))

    def _start(self, *args: str) -> subprocess.Popen:
        cmd = [self._ray, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
               f"--object-store-memory={self.store}", "--disable-usage-stats", *args]
        with open(os.path.join(self.tmp, f"node-{len(self.procs)}.log"), "wb") as log:
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 env=dict(os.environ, RAY_ADDRESS="", RAY_AUTH_MODE="disabled"))  # loopback only
        self.procs.append(p)
        return p

    def start(self) -> "LocalCluster":
        import ray

        self._start("--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.tmp}")
        self._wait(lambda: _alive_nodes(ray, self.address) >= 1)
        for _ in range(self.nodes - 1):
            self._start(f"--address={self.address}")
        self._wait(lambda: _alive_nodes(ray, self.address) >= self.nodes)
        return self

    def _wait(self, ready) -> None:
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            for p in self.procs:
                if p.poll() is not None:
                    self.stop(keep_logs=True)
                    raise RuntimeError(f"a ray node exited at start (logs in {self.tmp})")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
        self.stop(keep_logs=True)
        raise RuntimeError(f"the local Ray cluster did not start in {START_TIMEOUT:.0f} s (logs in {self.tmp})")

    def kill_node(self, k: int) -> None:
        """Stop node `k` (0 is the head) at once, as a machine failing."""
        _signal_group(self.procs[k], signal.SIGKILL)

    def stop(self, keep_logs: bool = False) -> None:
        for p in reversed(self.procs):  # workers first, then the head
            _signal_group(p, signal.SIGTERM)
            try:
                p.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        if not keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(p: subprocess.Popen, sig) -> None:
    """The node's own process group: `ray start` and the raylet, GCS, workers it began."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive_nodes(ray, address: str) -> int:
    """Nodes alive in the cluster at `address`, asked in a short-lived process (a driver joins
    one cluster at a time)."""
    code = ("import ray; ray.init(address=%r, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))" % address)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return int(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else 0
