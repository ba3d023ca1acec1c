"""One trace file being written: fixed row groups, a temporary name, renamed when complete."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from .atomic import temp_path
from .prefetch import prefetch

ROW_GROUP_ROWS = 1 << 20
META_KEY = b"servegen_fast"  # the schema metadata key of the generation parameters (trace.py)

# Parquet encodings, versioned: a trace records its version (metadata `file_encoding`; absent:
# 1), so regenerating it from its metadata gives the same bytes. 2: BYTE_STREAM_SPLIT for the
# numeric columns, 19% fewer bytes and 2.3x faster zstd than 1 (benchmarks/bench_encodings.py).
FILE_ENCODINGS = {1: {}, 2: {"use_byte_stream_split": True}}
FILE_ENCODING = 2


def file_encoding(schema: pa.Schema) -> int:
    """The encoding version a trace of `schema` is written with: the one its generation metadata
    (sample/job.py) names, 1 when it names none (written before versions); FILE_ENCODING without
    generation metadata (a user's own schema)."""
    raw = (schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw is not None else {}
    if not isinstance(meta, dict) or meta.get("generator") != "servegen-fast":
        return FILE_ENCODING
    version = meta.get("file_encoding", 1)
    if version not in FILE_ENCODINGS:
        raise ValueError(f"file_encoding {version!r} of the trace's metadata is not one of {sorted(FILE_ENCODINGS)} "
                         f"(written by a newer servegen-fast?)")
    return version


class FileSink:
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
                                           use_compliant_nested_type=False,
                                           **FILE_ENCODINGS[file_encoding(schema)])
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


def write_file(sink: FileSink, batches: Iterable[pa.RecordBatch], on_batch) -> None:
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
