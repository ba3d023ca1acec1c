"""Trace files (servegen_fast.io.trace): schema, Parquet / Arrow IPC round trips with metadata,
partitioning by hour or day, empty traces, atomic writes and clear errors on bad input."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servegen_fast.model.distributions import DistTableBuilder
from servegen_fast.sample.generate import generate, generate_table
from servegen_fast.model.fields import LAW_GAMMA, LAW_IDLE
from servegen_fast.model.pool import ClientPool, regular_grid
from servegen_fast.io.atomic import OutputError
from servegen_fast.io.manifest import manifest_name, read_manifest
from servegen_fast.io.trace import (iter_batches, read_schema, read_trace, trace_metadata, trace_schema,
                                 write_trace)

DISTS = {
    "language": {"input_tokens": ([10.0, 200.0, 3000.0], [0.5, 0.3, 0.2]), "output_tokens": ([5.0, 50.0], [0.5, 0.5])},
    "reason": {"input_tokens": ([10.0, 200.0], [0.5, 0.5]), "output_tokens": ([64.0, 999.0], [0.5, 0.5]),
               "reason_ratio": ([0.1, 0.9], [0.5, 0.5])},
    "multimodal": {"text_tokens": ([7.0, 70.0], [0.5, 0.5]), "image_tokens": ([256.0, 1024.0], [0.5, 0.5]),
                   "image_count": ([0.0, 1.0, 2.0], [0.3, 0.4, 0.3]), "output_tokens": ([5.0, 50.0], [0.5, 0.5])},
}


def make_pool(rate, category="language") -> ClientPool:
    """Synthetic pool: [C, W] rates (0 idle) on 600 s windows, Gamma cv 1.5, small pmfs."""
    rate = np.asarray(rate, dtype=np.float64)
    c, w = rate.shape
    law = np.where(rate > 0, LAW_GAMMA, LAW_IDLE).astype(np.uint8)
    b = DistTableBuilder()
    fields = tuple(DISTS[category])
    start, wlen, widx, lidx = regular_grid(w, 600, 21600)
    ids = np.array([b.add(*DISTS[category][f]) for f in fields], np.int32)
    dist_id = np.broadcast_to(ids, (c, int(lidx[-1]) + 1, len(fields))).copy()
    cv = np.where(rate > 0, 1.5, 0.0)
    return ClientPool(category=category, model="toy", client_ids=np.arange(c, dtype=np.int64) + 40,
                      window_start=start, window_len=wlen, window_index=widx, length_index=lidx, rate=rate, cv=cv,
                      law=law, shape=np.where(rate > 0, 1 / 1.5 ** 2, 0.0), scale=np.where(rate > 0, 1.0, 0.0),
                      fields=fields, dist_id=dist_id, dists=b.build())


META = {"seed": 9, "mode": "renewal", "rate": {"kind": "constant", "rate": 0.5}, "note": "ünïcode ok"}


def stream(pool, **kw):
    kw.setdefault("seed", 9)
    kw.setdefault("mode", "renewal")
    kw.setdefault("metadata", META)
    return generate(pool, kw.pop("rate", None), kw.pop("duration", None), **kw)


def schema_of(pool, include_reason_ratio=False, metadata=META):
    return trace_schema(pool.category, pool.fields, include_reason_ratio, metadata)


def files_in(path: Path) -> list[str]:
    return sorted(os.listdir(path))


# --------------------------------------------------------------------------- schema
def test_schema_by_category():
    lang = trace_schema("language", DISTS["language"])
    assert lang.names == ["timestamp", "client_id", "input_tokens", "output_tokens"]
    assert lang.field("timestamp").type == pa.float64() and lang.field("client_id").type == pa.uint32()
    assert all(not f.nullable for f in lang)
    reason = trace_schema("reason", DISTS["reason"], include_reason_ratio=True)
    assert reason.names[4:] == ["reasoning_tokens", "reason_ratio"]
    assert reason.field("reason_ratio").type == pa.float64()
    assert "reason_ratio" not in trace_schema("reason", DISTS["reason"]).names
    mm = trace_schema("multimodal", DISTS["multimodal"])
    assert mm.names == ["timestamp", "client_id", "input_tokens", "output_tokens", "text_tokens", "image_tokens"]
    assert mm.field("image_tokens").type == pa.list_(pa.uint32())
    assert lang.metadata is None and trace_metadata(lang) == {}
    assert trace_metadata(trace_schema("language", DISTS["language"], metadata=META)) == META


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("category", ["language", "reason", "multimodal"])
@pytest.mark.parametrize("suffix,fmt,magic", [(".parquet", None, b"PAR1"), (".arrow", None, b"ARROW1"),
                                              (".trace", "arrow", b"ARROW1"), (".bin", None, b"PAR1")])
def test_round_trip(tmp_path, category, suffix, fmt, magic):
    pool = make_pool(np.full((3, 4), 0.4), category)
    rr = category == "reason"
    want = generate_table(pool, None, seed=9, mode="renewal", metadata=META, include_reason_ratio=rr)
    path = tmp_path / f"trace{suffix}"
    seen = []
    out = write_trace(stream(pool, include_reason_ratio=rr, chunk_bytes=1), path, schema_of(pool, rr), fmt=fmt,
                      on_batch=lambda b: seen.append(b.num_rows))
    assert out == path and files_in(tmp_path) == [path.name]  # no temporary files left
    assert path.read_bytes()[:len(magic)] == magic
    assert sum(seen) == want.num_rows > 100 and len(seen) == 4
    got = read_trace(path)
    assert got.equals(want)
    assert got.schema.equals(want.schema, check_metadata=True)  # list<item: uint32> kept as written
    assert trace_metadata(path) == META
    assert read_schema(path).equals(want.schema, check_metadata=True)
    assert pa.Table.from_batches(list(iter_batches(path)), schema=got.schema).equals(want)


def test_parquet_columns_and_statistics(tmp_path):
    pool = make_pool(np.full((2, 3), 0.5))
    path = write_trace(stream(pool), tmp_path / "t.parquet", schema_of(pool))
    meta = pq.ParquetFile(path).metadata
    stats = meta.row_group(0).column(0).statistics  # timestamp
    t = read_trace(path).column("timestamp").to_numpy()
    assert stats.has_min_max and stats.min == t.min() and stats.max == t.max()


def test_overwrite_replaces_the_old_trace(tmp_path):
    pool = make_pool(np.full((2, 2), 0.5))
    path = tmp_path / "t.arrow"
    write_trace(stream(pool, seed=1), path, schema_of(pool))
    write_trace(stream(pool, seed=2), path, schema_of(pool))
    assert read_trace(path).equals(generate_table(pool, None, seed=2, mode="renewal", metadata=META))
    assert files_in(tmp_path) == ["t.arrow"]


# --------------------------------------------------------------------------- partitions
def hours_pool() -> ClientPool:
    """4 hours of 600 s windows; the third hour (windows 12-17) idle for every client."""
    rate = np.full((3, 24), 0.05)
    rate[:, 12:18] = 0.0
    rate[1, :6] = 0.0
    return make_pool(rate, "multimodal")


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_partitioned_by_hour(tmp_path, fmt):
    pool = hours_pool()
    start, duration = 1800, 4 * 3600 - 1800  # trace hours: [0, 1) .. [3, 3.5); trace hour 2 has 30 min idle
    single = tmp_path / f"single.{fmt}"
    write_trace(stream(pool, start=start, duration=duration), single, schema_of(pool))
    want = read_trace(single)
    out = tmp_path / "parts"
    write_trace(stream(pool, start=start, duration=duration, chunk_bytes=96 * 50), out, schema_of(pool),
                fmt=fmt, partition="hour")
    ext = "parquet" if fmt == "parquet" else "arrow"
    ts = want.column("timestamp").to_numpy()
    hours = sorted(set((ts // 3600).astype(int)))
    assert hours == [0, 1, 2, 3]
    assert files_in(out) == [manifest_name(fmt)] + [f"part-{h:05d}.{ext}" for h in hours]
    manifest = read_manifest(out)
    assert manifest["partition"] == "hour" and manifest["format"] == fmt and manifest["metadata"] == META
    assert [p["index"] for p in manifest["parts"]] == hours
    assert sum(p["rows"] for p in manifest["parts"]) == want.num_rows
    # every row sits in its hour's part, and the parts hold the rows of their hour
    for p in manifest["parts"]:
        part = read_trace(out / p["file"])
        pts = part.column("timestamp").to_numpy()
        assert part.num_rows == p["rows"] == int(((ts // 3600) == p["index"]).sum()) > 0
        assert ((pts // 3600) == p["index"]).all()
        assert trace_metadata(out / p["file"]) == META
    got = read_trace(out)
    assert got.equals(want) and got.schema.equals(want.schema, check_metadata=True)
    assert trace_metadata(out) == META


def test_partitioned_skips_empty_hours(tmp_path):
    pool = hours_pool()
    out = write_trace(stream(pool), tmp_path / "p", schema_of(pool), partition="hour")
    manifest = read_manifest(out)
    assert [p["index"] for p in manifest["parts"]] == [0, 1, 3]  # hour 2 is idle
    assert read_trace(out).equals(generate_table(pool, None, seed=9, mode="renewal", metadata=META))


def test_partitioned_by_day(tmp_path):
    pool = hours_pool()
    out = write_trace(stream(pool, chunk_bytes=1), tmp_path / "d", schema_of(pool), partition="day")
    assert files_in(out) == ["_manifest.parquet", "part-00000.parquet"]
    assert read_trace(out).equals(generate_table(pool, None, seed=9, mode="renewal", metadata=META))


def test_partitioned_rewrite_replaces_manifest(tmp_path):
    pool = hours_pool()
    out = tmp_path / "p"
    write_trace(stream(pool, seed=1), out, schema_of(pool), partition="hour")
    write_trace(stream(pool, seed=2), out, schema_of(pool), partition="hour")
    assert read_trace(out).equals(generate_table(pool, None, seed=2, mode="renewal", metadata=META))


# --------------------------------------------------------------------------- empty traces
@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
@pytest.mark.parametrize("category", ["language", "multimodal"])
def test_empty_trace_is_valid(tmp_path, fmt, category):
    pool = make_pool(np.zeros((2, 3)), category)  # every client idle
    schema = schema_of(pool)
    assert list(stream(pool)) == []
    path = write_trace(stream(pool), tmp_path / f"empty.{fmt}", schema, fmt=fmt)
    got = read_trace(path)
    assert got.num_rows == 0 and got.schema.equals(schema, check_metadata=True)
    assert trace_metadata(path) == META
    out = write_trace(stream(pool), tmp_path / "parts", schema, fmt=fmt, partition="hour")
    got = read_trace(out)
    assert got.num_rows == 0 and got.schema.equals(schema, check_metadata=True)
    assert trace_metadata(out) == META
    assert not [n for n in files_in(tmp_path) + files_in(out) if n.endswith(".tmp")]


# --------------------------------------------------------------------------- failures
class Boom(RuntimeError):
    pass


def failing(batches, after: int, exc=Boom):
    for i, b in enumerate(batches):
        if i == after:
            raise exc("generator failed")
        yield b


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_error_mid_stream_leaves_no_file(tmp_path, fmt, exc):
    pool = make_pool(np.full((2, 4), 0.5))
    path = tmp_path / f"t.{fmt}"
    with pytest.raises(exc):
        write_trace(failing(stream(pool, chunk_bytes=1), 2, exc), path, schema_of(pool))
    assert files_in(tmp_path) == []  # neither the trace nor a temporary file


def test_error_mid_stream_keeps_previous_trace(tmp_path):
    pool = make_pool(np.full((2, 4), 0.5))
    path = tmp_path / "t.parquet"
    write_trace(stream(pool, seed=1), path, schema_of(pool))
    before = read_trace(path)
    with pytest.raises(Boom):
        write_trace(failing(stream(pool, seed=2, chunk_bytes=1), 3), path, schema_of(pool))
    assert files_in(tmp_path) == ["t.parquet"]
    assert read_trace(path).equals(before)


def test_error_mid_stream_partitioned(tmp_path):
    pool = hours_pool()
    out = tmp_path / "p"
    with pytest.raises(Boom):
        # per-window chunks: the failure comes in the second hour
        write_trace(failing(stream(pool, chunk_bytes=1), 8), out, schema_of(pool), partition="hour")
    names = files_in(out)
    assert "_manifest.parquet" not in names and not [n for n in names if n.endswith(".tmp")]
    assert names == ["part-00000.parquet"]  # the completed hour stays, and is valid
    assert read_trace(out / names[0]).num_rows > 0
    with pytest.raises(ValueError, match="without a manifest"):
        read_trace(out)


def test_missing_output_directory(tmp_path):
    pool = make_pool(np.full((1, 1), 0.5))
    with pytest.raises(OutputError, match="folder .* does not exist"):
        write_trace(stream(pool), tmp_path / "nope" / "t.parquet", schema_of(pool))
    assert files_in(tmp_path) == []


def test_bad_format_and_partition(tmp_path):
    pool = make_pool(np.full((1, 1), 0.5))
    with pytest.raises(ValueError, match="unknown trace format 'csv'"):
        write_trace(stream(pool), tmp_path / "t.csv", schema_of(pool), fmt="csv")
    with pytest.raises(ValueError, match="unknown partition 'week'"):
        write_trace(stream(pool), tmp_path / "p", schema_of(pool), partition="week")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("content", [b"timestamp,client_id\n0.5,1\n", b"ARROW1 but not really", b"PAR1xxxxPAR1", b""])
def test_reading_a_non_trace_file(tmp_path, content):
    path = tmp_path / "bogus.parquet"
    path.write_bytes(content)
    for reader in (read_trace, read_schema, trace_metadata, lambda p: list(iter_batches(p))):
        with pytest.raises(ValueError, match="bogus.parquet"):
            reader(path)


def test_reading_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="trace not found"):
        read_trace(tmp_path / "absent.parquet")
    with pytest.raises(FileNotFoundError, match="trace not found"):
        read_schema(tmp_path / "absent.arrow")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ValueError, match="without a manifest"):
        read_trace(tmp_path / "dir")
    with pytest.raises(ValueError, match="without a manifest"):
        trace_metadata(tmp_path / "dir")


def test_partitioned_directory_without_manifest(tmp_path):
    pool = hours_pool()
    out = write_trace(stream(pool), tmp_path / "p", schema_of(pool), partition="hour")
    (out / "_manifest.parquet").unlink()
    with pytest.raises(ValueError, match=r"p: partitioned trace without a manifest"):
        read_trace(out)
    with pytest.raises(ValueError, match="without a manifest"):
        list(iter_batches(out))


def test_file_encoding_follows_the_generation_metadata():
    """io/sink.py: a job's metadata names its Parquet encoding version; a trace made before
    versions (generation metadata without the key) is version 1; other schemas get the default."""
    import json

    from servegen_fast.io.sink import FILE_ENCODING, file_encoding

    def schema(meta):
        return pa.schema([("timestamp", pa.float64())], metadata=None if meta is None else
                         {b"servegen_fast": json.dumps(meta).encode()})

    assert FILE_ENCODING == 2
    assert file_encoding(schema({"generator": "servegen-fast", "seed": 1})) == 1
    assert file_encoding(schema({"generator": "servegen-fast", "file_encoding": 2})) == 2
    assert file_encoding(schema(None)) == FILE_ENCODING == file_encoding(schema({"note": "mine"}))
    with pytest.raises(ValueError, match="file_encoding 9"):
        file_encoding(schema({"generator": "servegen-fast", "file_encoding": 9}))
