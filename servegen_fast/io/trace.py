"""Trace schema, writers (Parquet, Arrow IPC, partitioned by hour or day) and readers.

A trace's schema metadata (key ``servegen_fast``) records how it was made (package
version, seed, pool, mode, correlation, rate function, start, duration), so it can be
regenerated exactly. Every file is written under a temporary name and renamed when
complete; a partitioned trace is a directory whose manifest (``_manifest.parquet``, see
manifest.py) is written last.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..model.fields import ITEM_FIELDS, REASON_RATIO
from .atomic import check_output, clean_stale
from .manifest import read_manifest, remove_manifest, write_manifest
from .prefetch import prefetch
from .sink import META_KEY, ROW_GROUP_ROWS, FileSink, write_file

FORMATS = ("parquet", "arrow")
PARTITIONS = {"hour": 3600, "day": 86400}
REQUIRED = ("timestamp", "client_id", "input_tokens", "output_tokens")


def trace_schema(category: str, fields: Iterable[str], include_reason_ratio: bool = False,
                 metadata: dict | None = None, sessions: bool = False) -> pa.Schema:
    """Arrow schema of a trace generated from a pool with these fields (docs/trace-schema.md);
    `sessions` adds session_id, turn, think_time and prefix_id (null: no shared prompt)."""
    fields = tuple(fields)
    cols = [pa.field("timestamp", pa.float64(), nullable=False), pa.field("client_id", pa.uint32(), nullable=False),
            pa.field("input_tokens", pa.uint32(), nullable=False),
            pa.field("output_tokens", pa.uint32(), nullable=False)]
    if REASON_RATIO in fields:
        cols.append(pa.field("reasoning_tokens", pa.uint32(), nullable=False))
        if include_reason_ratio:
            cols.append(pa.field("reason_ratio", pa.float64(), nullable=False))
    if category == "multimodal" or "text_tokens" in fields:
        cols.append(pa.field("text_tokens", pa.uint32(), nullable=False))
        for item in ITEM_FIELDS:
            if item in fields:
                cols.append(pa.field(item, pa.list_(pa.uint32()), nullable=False))
    known = {c.name for c in cols} | set(ITEM_FIELDS.values()) | {REASON_RATIO}
    cols += [pa.field(f, pa.uint32(), nullable=False) for f in fields if f not in known]
    if sessions:
        cols += [pa.field("session_id", pa.uint64(), nullable=False), pa.field("turn", pa.uint16(), nullable=False),
                 pa.field("think_time", pa.float32(), nullable=False), pa.field("prefix_id", pa.uint32())]
    meta = {META_KEY: json.dumps(metadata).encode()} if metadata else None
    return pa.schema(cols, metadata=meta)


def trace_metadata(path_or_schema) -> dict:
    """The generation parameters stored in a trace (empty dict if none)."""
    schema = path_or_schema if isinstance(path_or_schema, pa.Schema) else read_schema(path_or_schema)
    return _metadata(schema, "the trace" if isinstance(path_or_schema, pa.Schema) else path_or_schema)


def _metadata(schema: pa.Schema, where) -> dict:
    raw = (schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError as e:
        raise ValueError(f"{where}: unreadable generation metadata ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: unreadable generation metadata (not a JSON object)")
    return meta


# --------------------------------------------------------------------------- writers
def write_trace(batches: Iterable[pa.RecordBatch], path: str | os.PathLike, schema: pa.Schema, *,
                fmt: str | None = None, partition: str | None = None,
                on_batch: Callable[[pa.RecordBatch], None] | None = None) -> Path:
    """Stream `batches` (time-ordered) into a trace file, or a directory of partitions.

    `fmt` is "parquet" or "arrow" (default: from the suffix, else parquet). With `partition`
    ("hour" or "day") `path` is a directory holding ``part-<index>.<ext>`` files, index =
    floor(timestamp / partition length), and a manifest written last. On any error the
    files in progress are removed; completed partitions stay (and are valid). `batches` is
    consumed one item ahead in a background thread, so generation overlaps encoding.
    """
    path = Path(path)
    fmt = fmt or ("arrow" if path.suffix in (".arrow", ".ipc", ".feather") else "parquet")
    if fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r}; expected one of {FORMATS}")
    if partition is not None and partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; expected one of {tuple(PARTITIONS)}")
    check_output(path, "file" if partition is None else "dir")
    if partition is None:
        write_file(FileSink(path, schema, fmt), batches, on_batch)
        return path
    return _write_partitioned(batches, path, schema, fmt, partition, on_batch)


def partition_file(directory: Path, index: int, fmt: str) -> Path:
    return directory / f"part-{index:05d}.{'parquet' if fmt == 'parquet' else 'arrow'}"


def write_partition_file(batches: Iterable[pa.RecordBatch], directory: str | os.PathLike, index: int,
                         schema: pa.Schema, fmt: str = "parquet", on_batch=None) -> dict:
    """One partition's file in `directory` (temporary name, then renamed), exactly as
    `write_partitions` writes it; returns its manifest entry. The caller owns the manifest."""
    sink = FileSink(partition_file(Path(directory), index, fmt), schema, fmt)
    write_file(sink, batches, on_batch)
    return sink.entry(index)


def _write_partitioned(batches, directory: Path, schema, fmt, partition, on_batch) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    clean_stale(directory)
    remove_manifest(directory)
    span = PARTITIONS[partition]
    sink, current, parts = None, None, []
    try:
        for batch in prefetch(batches):
            ts = batch.column("timestamp").to_numpy()
            idx = (ts // span).astype("int64")
            lo = 0
            while lo < len(idx):
                p = int(idx[lo])
                hi = int(np.searchsorted(idx, p, side="right"))  # batches are time-ordered
                if p != current:
                    if sink is not None:
                        sink.close(ok=True)
                        parts.append(sink.entry(current))
                    sink, current = FileSink(partition_file(directory, p, fmt), schema, fmt), p
                sink.write(batch.slice(lo, hi - lo))
                lo = hi
            if on_batch:
                on_batch(batch)
    except BaseException:
        if sink is not None:
            sink.close(ok=False)
        raise
    if sink is None:  # no rows: one empty part keeps the schema readable
        sink, current = FileSink(partition_file(directory, 0, fmt), schema, fmt), 0
    sink.close(ok=True)
    parts.append(sink.entry(current))
    _write_manifest(directory, partition, fmt, schema, parts, complete=True)
    return directory


def manifest_dict(partition: str, fmt: str, schema: pa.Schema, parts: list, complete: bool,
                  expected: int | None = None) -> dict:
    """A partitioned trace's manifest (io/manifest.py writes it)."""
    manifest = {"partition": partition, "format": fmt, "complete": complete,
                "parts": sorted(parts, key=lambda e: e["index"]), "metadata": trace_metadata(schema)}
    if expected is not None:
        manifest["expected_parts"] = expected
    return manifest


def _write_manifest(directory: Path, partition: str, fmt: str, schema: pa.Schema, parts: list, complete: bool,
                    expected: int | None = None) -> dict:
    manifest = manifest_dict(partition, fmt, schema, parts, complete, expected)
    write_manifest(directory, manifest, schema, fmt)
    return manifest


def _intact(directory: Path, entry: dict, fmt: str) -> bool:
    """A listed partition is reusable if its file has the recorded size and a readable footer
    with the recorded row count (a truncated or replaced file fails one of these)."""
    f = directory / entry["file"]
    try:
        if not f.is_file() or f.stat().st_size != entry.get("bytes"):
            return False
        if fmt == "parquet":
            return pq.ParquetFile(f).metadata.num_rows == entry["rows"]
        with ipc.open_file(f) as r:
            return r.schema is not None
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        return False


def write_partitions(make_batches: Callable[[int, int], Iterable[pa.RecordBatch]], directory: str | os.PathLike,
                     schema: pa.Schema, *, duration: int, fmt: str = "parquet", partition: str = "day",
                     only: Iterable[int] | None = None, on_batch: Callable[[pa.RecordBatch], None] | None = None,
                     on_partition: Callable[[dict, bool], None] | None = None) -> dict:
    """Write a trace of [0, duration) as one file per partition, each generated on its own.

    `make_batches(t0, t1)` yields the rows of [t0, t1) (time-ordered, timestamps from the
    trace start). Resumable: a partition already listed in the directory's manifest for the
    same trace (same generation metadata) whose file is intact is kept, not regenerated;
    anything else is (re)written under a temporary name and renamed. The manifest is
    rewritten after every partition and says `complete: true` once all are present; readers
    refuse an incomplete one. `only` restricts the run to some partition indices.
    `on_partition(entry, reused)` is called for each partition done or kept.
    """
    directory = Path(directory)
    if fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r}; expected one of {FORMATS}")
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; expected one of {tuple(PARTITIONS)}")
    span = PARTITIONS[partition]
    n_parts = max(1, -(-int(duration) // span))
    todo = list(range(n_parts)) if only is None else sorted(set(int(i) for i in only))
    bad = [i for i in todo if not 0 <= i < n_parts]
    if bad:
        raise ValueError(f"partition {bad[0]} is out of range: the trace has {n_parts} {partition} partitions "
                         f"(0 to {n_parts - 1})")
    check_output(directory, "dir")
    directory.mkdir(parents=True, exist_ok=True)
    clean_stale(directory)  # what a killed run left (kept partitions included)
    parts: dict[int, dict] = {}
    old = read_manifest(directory)
    if old is not None:
        if old.get("metadata") != trace_metadata(schema) or old.get("format") != fmt or \
                old.get("partition") != partition:
            raise ValueError(f"{directory} holds a different trace (its manifest records other generation "
                             f"parameters, format or partitioning); choose another output or remove it")
        parts = {e["index"]: e for e in old.get("parts", []) if _intact(directory, e, fmt)}
    for i in todo:
        if i in parts:
            if on_partition:
                on_partition(parts[i], True)
            continue
        sink = FileSink(partition_file(directory, i, fmt), schema, fmt)
        write_file(sink, make_batches(i * span, min((i + 1) * span, int(duration))), on_batch)
        parts[i] = sink.entry(i)
        complete = len(parts) == n_parts
        _write_manifest(directory, partition, fmt, schema, list(parts.values()), complete, n_parts)
        if on_partition:
            on_partition(parts[i], False)
    return _write_manifest(directory, partition, fmt, schema, list(parts.values()), len(parts) == n_parts, n_parts)


# --------------------------------------------------------------------------- readers
def _files(path: Path) -> list[Path]:
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest is None:
            raise ValueError(f"{path}: partitioned trace without a manifest (_manifest.parquet; incomplete or "
                             "not a trace)")
        if manifest.get("complete") is False:
            raise ValueError(f"{path}: incomplete partitioned trace ({len(manifest['parts'])} of "
                             f"{manifest.get('expected_parts', '?')} partitions); re-run the command that wrote it "
                             f"to finish it")
        return [path / p["file"] for p in manifest["parts"]]
    if not path.is_file():
        raise FileNotFoundError(f"trace not found: {path}")
    return [path]


def _is_arrow(file: Path) -> bool:
    with open(file, "rb") as f:
        return f.read(6) == b"ARROW1"


def read_schema(path: str | os.PathLike) -> pa.Schema:
    path = Path(path)
    if path.is_dir():
        files = _files(path)
        if not files:
            meta = read_manifest(path)["metadata"]
            return pa.schema([], metadata={META_KEY: json.dumps(meta).encode()})
        path = files[0]
    elif not path.is_file():
        raise FileNotFoundError(f"trace not found: {path}")
    try:
        if _is_arrow(path):
            with ipc.open_file(path) as r:
                schema = r.schema
        else:
            schema = pq.read_schema(path)
        names = schema.names  # (decodes the column names)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable Parquet or Arrow IPC trace ({e})") from None
    _check_columns(schema, path, names)
    _metadata(schema, path)  # readable, or an error naming the file
    return schema


def _check_columns(schema: pa.Schema, path, names: list) -> None:
    """A trace has numeric timestamp, client_id, input_tokens and output_tokens columns."""
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ValueError(f"{path}: not a trace: no {', '.join(missing)} column{'s' if len(missing) > 1 else ''} "
                         f"(its columns: {', '.join(names[:8]) or 'none'}{', ...' if len(names) > 8 else ''})")
    for c in REQUIRED:
        t = schema.field(c).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise ValueError(f"{path}: not a trace: column {c} is {t}, expected numbers")


def trace_span(path: str | os.PathLike) -> tuple[float, float] | None:
    """The [start, end) seconds (from the trace start) a trace file covers: the whole trace, or
    for one partition file of a partitioned directory, that partition (from the manifest
    beside it). None when its metadata records no duration."""
    path = Path(path)
    duration = trace_metadata(path).get("duration")
    if duration is None:
        return None
    try:
        manifest = (read_manifest(path.parent) if path.is_file() else None) or {}
        entry = next(e for e in manifest.get("parts", []) if e.get("file") == path.name)
        i, span = int(entry["index"]), PARTITIONS[manifest["partition"]]
        return float(i * span), float(min((i + 1) * span, duration))
    except (StopIteration, ValueError, KeyError, TypeError):  # not a listed partition: the whole trace
        return 0.0, float(duration)


def iter_batches(path: str | os.PathLike) -> Iterator[pa.RecordBatch]:
    """Stream a trace's record batches in order (file or partitioned directory)."""
    files = _files(Path(path))
    first = None
    for file in files:
        try:
            if _is_arrow(file):
                with ipc.open_file(file) as r:
                    first = _same_schema(r.schema, first, file, files)
                    for i in range(r.num_record_batches):
                        yield r.get_batch(i)
            else:
                pf = pq.ParquetFile(file)
                first = _same_schema(pf.schema_arrow, first, file, files)
                yield from pf.iter_batches(batch_size=ROW_GROUP_ROWS)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{file}: not a readable Parquet or Arrow IPC trace ({' '.join(str(e).split())})") from None


def _same_schema(schema: pa.Schema, first: pa.Schema | None, file: Path, files: list) -> pa.Schema:
    """The parts of a partitioned trace share one schema (a damaged or foreign part names itself)."""
    if first is not None and not schema.equals(first):
        diff = [f"{f.name}: {f.type}" for f in schema if f.name not in first.names or first.field(f.name) != f]
        raise ValueError(f"{file}: its columns differ from {files[0].name}'s ({', '.join(diff[:4]) or 'order'}): "
                         "a damaged or foreign part")
    return schema


def read_trace(path: str | os.PathLike) -> pa.Table:
    """A whole trace as one table (file or partitioned directory)."""
    schema = read_schema(path)
    return pa.Table.from_batches(list(iter_batches(path)), schema=schema)
