"""Chunk columns -> Arrow record batches in the trace schema (io/trace.py)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..io.arrow_numpy import to_arrow
from ..model.fields import ITEM_FIELDS
from ..model.pool import ClientPool


def to_batch(cols: dict, view: ClientPool, schema: pa.Schema, include_reason_ratio: bool) -> pa.RecordBatch:
    arrays = {}
    u32 = lambda x: x.astype(np.uint32)  # noqa: E731 - lengths are integral floats: exact
    for name in schema.names:
        if name == "timestamp":
            arrays[name] = to_arrow(cols["timestamp"], pa.float64())
        elif name == "client_id":
            arrays[name] = to_arrow(cols["client_id"], pa.uint32())
        elif name in ITEM_FIELDS:
            off, vals = cols[name]
            # int32 offsets: a chunk's item count stays far below 2**31 under the memory budget
            arrays[name] = pa.ListArray.from_arrays(to_arrow(off.astype(np.int32), pa.int32()),
                                                    to_arrow(u32(vals), pa.uint32()))
        elif name == "input_tokens" and view.category == "multimodal":
            total = cols["text_tokens"].copy()
            for item in ITEM_FIELDS:
                if item in cols:
                    off, vals = cols[item]
                    sums = np.zeros(len(off) - 1)
                    if len(vals):
                        csum = np.concatenate(([0.0], np.cumsum(vals)))
                        sums = csum[off[1:]] - csum[off[:-1]]
                    total = total + sums
            arrays[name] = to_arrow(u32(total), pa.uint32())
        elif name == "reasoning_tokens":
            out = cols["output_tokens"]
            # round half up, never above the output length
            arrays[name] = to_arrow(u32(np.minimum(np.floor(cols["reason_ratio"] * out + 0.5), out)), pa.uint32())
        elif name == "session_id":
            arrays[name] = to_arrow(cols[name], pa.uint64())
        elif name == "turn":
            arrays[name] = to_arrow(cols[name].astype(np.uint16), pa.uint16())
        elif name == "think_time":
            arrays[name] = to_arrow(cols[name].astype(np.float32), pa.float32())
        elif name == "prefix_id":
            pid = cols[name]
            arrays[name] = pa.array(np.maximum(pid, 0).astype(np.uint32), pa.uint32(), mask=pid < 0)
        elif name == "reason_ratio":
            arrays[name] = to_arrow(cols["reason_ratio"], pa.float64())
        else:
            arrays[name] = to_arrow(u32(cols[name]), pa.uint32())
    return pa.RecordBatch.from_arrays([arrays[n] for n in schema.names], schema=schema)
