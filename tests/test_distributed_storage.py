"""distributed.storage.Output: the upload paths (scratch + copy + move, or one object-store
upload) give the same bytes as a direct write; manifests, intact checks, probe errors."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from servegen_fast.distributed.storage import Output
from servegen_fast.io.trace import trace_schema

SCHEMA = trace_schema("language", ("input_tokens", "output_tokens"))


def batches():
    n = 5000
    rng = np.random.default_rng(0)
    yield pa.record_batch([np.sort(rng.uniform(0, 3600, n)), rng.integers(0, 9, n).astype(np.uint32),
                           rng.integers(1, 99, n).astype(np.uint32), rng.integers(1, 99, n).astype(np.uint32)],
                          schema=SCHEMA)


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
@pytest.mark.parametrize("object_store", [False, True])
def test_upload_paths_give_the_direct_bytes(tmp_path, fmt, object_store):
    direct = Output(tmp_path / "a")
    direct.prepare()
    e1 = direct.write_partition(batches(), 3, SCHEMA, fmt)
    up = Output(f"file://{tmp_path / 'b'}")
    up.prepare()
    up.local, up.object_store = False, object_store  # as a remote filesystem would be
    e2 = up.write_partition(batches(), 3, SCHEMA, fmt)
    assert e1 == e2 and e1["rows"] == 5000
    name = e1["file"]
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [name]  # no temporary left
    assert up.intact(e2, fmt) and not up.intact(dict(e2, bytes=e2["bytes"] + 1), fmt)


def test_manifest_round_trip_and_errors(tmp_path):
    out = Output(tmp_path / "t")
    assert out.uri == str(tmp_path / "t")
    out.prepare()
    assert out.read_manifest() is None
    schema = pa.schema([("timestamp", pa.float64())])
    out.write_manifest({"parts": [], "complete": False}, schema, "parquet")
    assert out.read_manifest() == {"parts": [], "complete": False}
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["_manifest.parquet"]
    (tmp_path / "t" / "_manifest.parquet").write_text("{")
    with pytest.raises(ValueError, match="unreadable manifest"):
        out.read_manifest()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        Output(tmp_path / "f").prepare()
    with pytest.raises(ValueError, match="not a filesystem pyarrow knows"):
        Output("nosuchscheme://bucket/x")


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Output("rel/dir").uri == str(tmp_path / "rel" / "dir")  # workers run elsewhere
