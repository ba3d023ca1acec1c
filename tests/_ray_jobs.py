"""Shared pieces of the Ray tests: a small job, its single-machine reference, file comparison,
and fault hooks (shipped to Ray workers by value)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from servegen_fast.io.manifest import read_manifest as manifest
from servegen_fast.model import rates as R
from servegen_fast.sample.job import Job, write

JOB = Job(pool_name="builtin", start=0, duration=4 * 3600, rate=R.Constant(4.0), seed=7)  # 4 hourly parts


def source():
    from servegen_fast.io.pool_file import open_pool
    from servegen_fast.sample.job import source_for

    return source_for(open_pool("builtin"), JOB)


def reference(directory: Path, job: Job = JOB) -> Path:
    write(job, source(), directory, partition="hour")
    return directory


def same_files(a: Path, b: Path) -> list[str]:
    """Names present in `a` or `b` whose bytes differ (temporary files ignored)."""
    names = {p.name for d in (a, b) for p in d.iterdir() if not p.name.startswith(".")}
    return sorted(n for n in names if not ((a / n).is_file() and (b / n).is_file()
                                           and (a / n).read_bytes() == (b / n).read_bytes()))


def init_local_ray():
    """ray.init with 2 CPUs, token authentication off (as on the two-node test cluster: a driver
    process keeps its first cluster's authentication mode across ray.shutdown)."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    return ray


class KillOnce:
    """The worker process running partition `index` dies (os._exit) the first time only."""

    def __init__(self, index: int, marker: Path):
        self.index, self.marker = index, str(marker)

    def __call__(self, index: int) -> None:
        if index == self.index and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)


class FailAlways:
    """Partition `index` raises (an application error: not retried)."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, index: int) -> None:
        if index == self.index:
            raise OSError(f"disk full while writing partition {index}")


class Hang:
    """Partitions at or after `index` wait `seconds` (so a driver can be stopped meanwhile)."""

    def __init__(self, index: int, seconds: float):
        self.index, self.seconds = index, seconds

    def __call__(self, index: int) -> None:
        if index >= self.index:
            time.sleep(self.seconds)


class RecordNode:
    """Each task notes the node it ran on."""

    def __init__(self, directory: Path):
        self.directory = str(directory)

    def __call__(self, index: int) -> None:
        import ray

        Path(self.directory, f"{index}.node").write_text(ray.get_runtime_context().get_node_id())


class HangOffHead:
    """A task on a node other than the head marks `marker` and waits (its node is then killed)."""

    def __init__(self, head_node_id: str, marker: Path, seconds: float = 300):
        self.head, self.marker, self.seconds = head_node_id, str(marker), seconds

    def __call__(self, index: int) -> None:
        import ray

        if ray.get_runtime_context().get_node_id() != self.head:
            Path(self.marker).write_text(str(index))
            time.sleep(self.seconds)


__all__ = ["init_local_ray", "RecordNode", "HangOffHead", "JOB", "manifest", "source", "reference", "same_files", "KillOnce",
           "FailAlways", "Hang"]
