"""servegen_fast.distributed.generate on a local Ray instance (ray.init with 2 CPUs): partition
tasks give the single-machine bytes and manifest; a killed task is retried; a failing one is
reported with the other partitions kept; bad output paths and addresses are one-line errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

ray = pytest.importorskip("ray", reason="the distributed extra (ray) is part of the test extra")

import _ray_jobs as J  # noqa: E402
from servegen_fast.distributed import generate_on_ray  # noqa: E402
from servegen_fast.distributed.cluster import check_reachable  # noqa: E402

ray.cloudpickle.register_pickle_by_value(J)  # the fault hooks travel to the workers


@pytest.fixture(scope="module")
def local_ray():
    yield J.init_local_ray()
    ray.shutdown()


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    return J.reference(tmp_path_factory.mktemp("single") / "trace")


def test_partitions_equal_the_single_machine_run(local_ray, expected, tmp_path):
    seen = []
    done = generate_on_ray(J.JOB, tmp_path / "t", partition="hour", progress=lambda r, s: seen.append((r, s)))
    assert J.same_files(expected, tmp_path / "t") == []
    manifest = J.manifest(tmp_path / "t")
    assert manifest["complete"] and len(manifest["parts"]) == 4
    assert done.rows == done.total_rows == sum(p["rows"] for p in manifest["parts"]) > 0
    assert seen[-1] == (done.rows, J.JOB.duration)  # the bar reaches the end over all partitions


def test_a_killed_task_is_retried(local_ray, expected, tmp_path):
    marker = tmp_path / "killed"
    generate_on_ray(J.JOB, tmp_path / "t", partition="hour", task_hook=J.KillOnce(2, marker))
    assert marker.exists()  # the worker really died once
    assert J.same_files(expected, tmp_path / "t") == []


def test_a_failing_partition_keeps_the_others_and_resumes(local_ray, expected, tmp_path):
    out = tmp_path / "t"
    with pytest.raises(RuntimeError) as e:
        generate_on_ray(J.JOB, out, partition="hour", task_hook=J.FailAlways(1))
    msg = str(e.value)
    assert "\n" not in msg and "partition 1" in msg and "disk full" in msg and "3 of 4 partitions kept" in msg
    manifest = J.manifest(out)
    assert not manifest["complete"] and [p["index"] for p in manifest["parts"]] == [0, 2, 3]
    again = generate_on_ray(J.JOB, out, partition="hour")  # resume: only partition 1 is generated
    assert again.reused_partitions == 3
    assert J.same_files(expected, out) == []


def test_only_some_partitions(local_ray, expected, tmp_path):
    generate_on_ray(J.JOB, tmp_path / "t", partition="hour", only=[3, 1])
    names = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert names == ["_manifest.parquet", "part-00001.parquet", "part-00003.parquet"]
    for n in names[1:]:
        assert (tmp_path / "t" / n).read_bytes() == (expected / n).read_bytes()


def test_unwritable_output_is_one_line(local_ray, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermissionError, match=r"^output .*file/sub is not writable \(.*\)$"):
        generate_on_ray(J.JOB, tmp_path / "file" / "sub", partition="hour")


def test_other_trace_in_output_is_refused(local_ray, expected, tmp_path):
    import dataclasses

    out = tmp_path / "t"
    generate_on_ray(J.JOB, out, partition="hour", only=[0])
    with pytest.raises(ValueError, match="holds a different trace"):
        generate_on_ray(dataclasses.replace(J.JOB, seed=8), out, partition="hour")


def test_unreachable_address():
    with pytest.raises(ConnectionError, match=r"^Ray cluster at 127\.0\.0\.1:1 is unreachable"):
        check_reachable("127.0.0.1:1")
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        check_reachable("nonsense")


def test_cli_unreachable_address_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "generate", "--duration", "2h", "--rate", "1",
                        "--partition", "hour", "--ray", "127.0.0.1:1", "-o", str(tmp_path / "t"), "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("error: Ray cluster at 127.0.0.1:1 is unreachable")
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_generate_on_ray(local_ray, expected, tmp_path, capsys):
    from servegen_fast import cli

    rc = cli.main(["generate", "--duration", "4h", "--rate", "4", "--seed", "7", "--partition", "hour", "--ray",
                   "-o", str(tmp_path / "t")])
    assert rc == 0 and "wrote" in capsys.readouterr().err
    assert J.same_files(expected, tmp_path / "t") == []  # the CLI's job is JOB: same bytes


def test_cli_ray_needs_partition(tmp_path):
    r = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "generate", "--duration", "2h", "--rate", "1",
                        "--ray", "-o", str(tmp_path / "t.parquet"), "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--ray needs --partition" in r.stderr
