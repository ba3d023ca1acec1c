"""Trace schema, writers (Parquet, Arrow IPC, partitioned by hour or day) and readers.

A trace's schema metadata (key ``servegen_fast``) records how it was made (package
version, seed, pool, mode, correlation, rate function, start, duration), so it can be
regenerated exactly. Every file is written under a temporary name and renamed when
complete; a partitioned trace is a directory whose ``_manifest.json`` is written last.
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
from .atomic import temp_path, write_text
from .prefetch import prefetch

META_KEY = b"servegen_fast"
FORMATS = ("parquet", "arrow")
PARTITIONS = {"hour": 3600, "day": 86400}
MANIFEST = "_manifest.json"
ROW_GROUP_ROWS = 1 << 20


def trace_schema(category: str, fields: Iterable[str], include_reason_ratio: bool = False,
                 metadata: dict | None = None) -> pa.Schema:
    """Arrow schema of a trace generated from a pool with these fields (docs/trace-schema.md)."""
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
    meta = {META_KEY: json.dumps(metadata).encode()} if metadata else None
    return pa.schema(cols, metadata=meta)


def trace_metadata(path_or_schema) -> dict:
    """The generation parameters stored in a trace (empty dict if none)."""
    schema = path_or_schema if isinstance(path_or_schema, pa.Schema) else read_schema(path_or_schema)
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


# --------------------------------------------------------------------------- writers
class _FileSink:
    """One trace file, written to a temporary name and renamed on `close(ok=True)`.

    Rows are regrouped into fixed blocks of ROW_GROUP_ROWS (one Parquet row group or Arrow
    record batch each) whatever batches arrive, so the bytes of a file depend only on its
    rows: a partition generated alone equals the same partition of a whole run.
    """

    def __init__(self, path: Path, schema: pa.Schema, fmt: str):
        self.path = path
        self.tmp = temp_path(path)
        self.schema = schema
        self.rows = 0
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        if fmt == "parquet":
            # use_compliant_nested_type=False keeps list children named "item", so a trace
            # read back has exactly the schema it was written with (list<item: uint32>)
            self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", use_dictionary=False,
                                           write_statistics=["timestamp", "client_id"],
                                           use_compliant_nested_type=False)
        else:
            self.writer = ipc.new_file(str(self.tmp), schema,
                                       options=ipc.IpcWriteOptions(compression="zstd"))
        self.fmt = fmt

    def write(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.rows += batch.num_rows
        while self.pending_rows >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, n: int) -> None:
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        block = table.slice(0, n).combine_chunks()
        rest = table.slice(n)
        self.pending = rest.to_batches()
        self.pending_rows = rest.num_rows
        if self.fmt == "parquet":
            self.writer.write_table(block, row_group_size=ROW_GROUP_ROWS)
        else:
            self.writer.write_table(block, max_chunksize=ROW_GROUP_ROWS)

    def close(self, ok: bool) -> None:
        try:
            if ok and self.pending_rows:
                self._flush(self.pending_rows)
        except BaseException:
            ok = False
            raise
        finally:
            self.writer.close()
            if ok:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)

    def entry(self, index: int) -> dict:
        """This (closed) partition's manifest entry."""
        return {"index": index, "file": self.path.name, "rows": self.rows, "bytes": self.path.stat().st_size}


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
    if partition is None:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {path.parent}")
        _write_file(_FileSink(path, schema, fmt), batches, on_batch)
        return path
    return _write_partitioned(batches, path, schema, fmt, partition, on_batch)


def _write_file(sink: _FileSink, batches: Iterable[pa.RecordBatch], on_batch) -> None:
    """All of `batches` into `sink`; the file appears under its name only if all were written."""
    try:
        for batch in prefetch(batches):
            sink.write(batch)
            if on_batch:
                on_batch(batch)
    except BaseException:
        sink.close(ok=False)
        raise
    sink.close(ok=True)


def partition_file(directory: Path, index: int, fmt: str) -> Path:
    return directory / f"part-{index:05d}.{'parquet' if fmt == 'parquet' else 'arrow'}"


def write_partition_file(batches: Iterable[pa.RecordBatch], directory: str | os.PathLike, index: int,
                         schema: pa.Schema, fmt: str = "parquet", on_batch=None) -> dict:
    """One partition's file in `directory` (temporary name, then renamed), exactly as
    `write_partitions` writes it; returns its manifest entry. The caller owns the manifest."""
    sink = _FileSink(partition_file(Path(directory), index, fmt), schema, fmt)
    _write_file(sink, batches, on_batch)
    return sink.entry(index)


def _write_partitioned(batches, directory: Path, schema, fmt, partition, on_batch) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
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
                    sink, current = _FileSink(partition_file(directory, p, fmt), schema, fmt), p
                sink.write(batch.slice(lo, hi - lo))
                lo = hi
            if on_batch:
                on_batch(batch)
    except BaseException:
        if sink is not None:
            sink.close(ok=False)
        raise
    if sink is None:  # no rows: one empty part keeps the schema readable
        sink, current = _FileSink(partition_file(directory, 0, fmt), schema, fmt), 0
    sink.close(ok=True)
    parts.append(sink.entry(current))
    _write_manifest(directory, partition, fmt, schema, parts, complete=True)
    return directory


def manifest_dict(partition: str, fmt: str, schema: pa.Schema, parts: list, complete: bool,
                  expected: int | None = None) -> dict:
    """A partitioned trace's manifest (written as ``json.dumps(manifest, indent=1)``)."""
    manifest = {"partition": partition, "format": fmt, "complete": complete,
                "parts": sorted(parts, key=lambda e: e["index"]), "metadata": trace_metadata(schema)}
    if expected is not None:
        manifest["expected_parts"] = expected
    return manifest


def _write_manifest(directory: Path, partition: str, fmt: str, schema: pa.Schema, parts: list, complete: bool,
                    expected: int | None = None) -> dict:
    manifest = manifest_dict(partition, fmt, schema, parts, complete, expected)
    write_text(directory / MANIFEST, json.dumps(manifest, indent=1))
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
    except (pa.ArrowInvalid, OSError):
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
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    parts: dict[int, dict] = {}
    mpath = directory / MANIFEST
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except ValueError as e:
            raise ValueError(f"{mpath}: unreadable manifest ({e}); remove it to start over") from None
        if old.get("metadata") != trace_metadata(schema) or old.get("format") != fmt or \
                old.get("partition") != partition:
            raise ValueError(f"{directory} holds a different trace (its {MANIFEST} records other generation "
                             f"parameters, format or partitioning); choose another output or remove it")
        parts = {e["index"]: e for e in old.get("parts", []) if _intact(directory, e, fmt)}
    for i in todo:
        if i in parts:
            if on_partition:
                on_partition(parts[i], True)
            continue
        sink = _FileSink(partition_file(directory, i, fmt), schema, fmt)
        _write_file(sink, make_batches(i * span, min((i + 1) * span, int(duration))), on_batch)
        parts[i] = sink.entry(i)
        complete = len(parts) == n_parts
        _write_manifest(directory, partition, fmt, schema, list(parts.values()), complete, n_parts)
        if on_partition:
            on_partition(parts[i], False)
    return _write_manifest(directory, partition, fmt, schema, list(parts.values()), len(parts) == n_parts, n_parts)


# --------------------------------------------------------------------------- readers
def _files(path: Path) -> list[Path]:
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise ValueError(f"{path}: partitioned trace without {MANIFEST} (incomplete or not a trace)")
        manifest = json.loads((path / MANIFEST).read_text())
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
            meta = json.loads((path / MANIFEST).read_text())["metadata"]
            return pa.schema([], metadata={META_KEY: json.dumps(meta).encode()})
        path = files[0]
    elif not path.is_file():
        raise FileNotFoundError(f"trace not found: {path}")
    try:
        if _is_arrow(path):
            with ipc.open_file(path) as r:
                return r.schema
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet or Arrow IPC trace ({e})") from None


def iter_batches(path: str | os.PathLike) -> Iterator[pa.RecordBatch]:
    """Stream a trace's record batches in order (file or partitioned directory)."""
    for file in _files(Path(path)):
        try:
            if _is_arrow(file):
                with ipc.open_file(file) as r:
                    for i in range(r.num_record_batches):
                        yield r.get_batch(i)
            else:
                yield from pq.ParquetFile(file).iter_batches(batch_size=ROW_GROUP_ROWS)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{file}: not a readable Parquet or Arrow IPC trace ({e})") from None


def read_trace(path: str | os.PathLike) -> pa.Table:
    """A whole trace as one table (file or partitioned directory)."""
    schema = read_schema(path)
    return pa.Table.from_batches(list(iter_batches(path)), schema=schema)
