"""Export a trace to the formats other tools replay (docs/sessions.md, "Export").

* ``mooncake``: JSONL, one object a line: ``timestamp`` (integer ms from the trace start),
  ``input_length``, ``output_length``, ``hash_ids`` (the derived block ids, io/blocks.py; only
  for traces made with sessions), and with sessions ``session_id``, ``turn`` and ``think_time``
  (seconds after the previous turn's completion, for closed-loop replay).
* ``vllm``: the request JSONL of vLLM's custom dataset: ``prompt`` and ``output_tokens``. The
  prompt has one word per input token; with sessions the words of a block are a keyed function
  of its block id (io/content.py, the same words text replay sends), so requests with equal
  block ids get equal text, a turn's prompt starts with the previous turn's, and a server's
  prefix cache sees the trace's sharing (token counts after tokenization depend on the tokenizer).
* ``burstgpt``: CSV with BurstGPT's columns ``Timestamp`` (s), ``Model`` (``client-<id>``),
  ``Request tokens``, ``Response tokens``, ``Total tokens``, ``Log Type`` (``Conversation log``),
  and ``Session ID`` with sessions.

Streaming: one record batch at a time (memory bounded by a batch, 2**20 rows), written under a
temporary name and renamed when complete; `progress(rows_done, rows_total)` after each batch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from .atomic import atomic_path
from .blocks import BlockSpec, content_ids, hash_ids
from .content import block_words
from .trace import _files, _is_arrow, iter_batches, read_schema, trace_metadata

FORMATS = ("mooncake", "vllm", "burstgpt")
def _total_rows(path) -> int:
    """Rows of a trace from its file footers (nothing is decoded)."""
    n = 0
    for f in _files(Path(path)):
        if _is_arrow(f):
            with ipc.open_file(f) as r:
                n += sum(r.get_batch(i).num_rows for i in range(r.num_record_batches))
        else:
            n += pq.ParquetFile(f).metadata.num_rows
    return n


def export_trace(path: str | os.PathLike, fmt: str, output: str | os.PathLike,
                 progress: Callable[[int, int], None] | None = None) -> int:
    """Write the trace at `path` as `fmt` to `output`; returns the rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    schema = read_schema(path)
    meta = trace_metadata(schema)
    spec = BlockSpec.from_metadata(meta, str(path)) if meta.get("sessions") and "session_id" in schema.names \
        else None
    total = _total_rows(path)
    rows = 0
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
        if fmt == "burstgpt":
            cols = ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"]
            out.write(",".join(cols + (["Session ID"] if spec else [])) + "\n")
        for batch in iter_batches(path):
            out.write(_lines(batch, fmt, spec, rows))
            rows += batch.num_rows
            if progress is not None:
                progress(rows, total)
    return rows


def _lines(batch: pa.RecordBatch, fmt: str, spec: BlockSpec | None, first_row: int) -> str:
    col = lambda n: batch.column(n).to_numpy(zero_copy_only=False)  # noqa: E731
    ts, inp, outp = col("timestamp"), col("input_tokens").astype(np.int64), col("output_tokens").astype(np.int64)
    n = batch.num_rows
    blocks = hash_ids(batch, spec) if spec is not None and fmt == "mooncake" else None
    if fmt == "burstgpt":
        cid = col("client_id")
        extra = [f",{s}" for s in col("session_id").tolist()] if spec else [""] * n
        return "".join(f"{t!r},client-{c},{i},{o},{i + o},Conversation log{e}\n"
                       for t, c, i, o, e in zip(ts.tolist(), cid.tolist(), inp.tolist(), outp.tolist(), extra))
    lines = []
    if fmt == "mooncake":
        ms = np.round(ts * 1000.0).astype(np.int64).tolist()
        if spec is not None:
            off, ids = blocks.offsets.to_numpy(), blocks.values.to_numpy()
            sid, turn, think = col("session_id").tolist(), col("turn").tolist(), col("think_time").tolist()
        for r in range(n):
            obj = {"timestamp": ms[r], "input_length": int(inp[r]), "output_length": int(outp[r])}
            if spec is not None:
                obj["hash_ids"] = ids[off[r]:off[r + 1]].tolist()
                obj.update(session_id=sid[r], turn=turn[r], think_time=round(float(think[r]), 6))
            lines.append(json.dumps(obj))
    else:  # vllm
        if spec is not None:
            cids = content_ids(batch, spec)
            off, ids = cids.offsets.to_numpy(), cids.values.to_numpy()
        bs = spec.block_size if spec is not None else 512
        for r in range(n):
            # without sessions every request's text is its own (blocks keyed by its row number)
            ids_r = ids[off[r]:off[r + 1]] if spec is not None else -1 - (first_row + r) * 4096 - np.arange(
                1 + int(inp[r]) // bs)
            lines.append(json.dumps({"prompt": block_words(ids_r, bs, int(inp[r])), "output_tokens": int(outp[r])}))
    return "".join(line + "\n" for line in lines)
