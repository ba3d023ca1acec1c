"""Mooncake JSONL logs: one object a line with timestamp (ms), input_length, output_length,
hash_ids (ids of fixed-size KV blocks; `RequestLog.blocks`). The block size is Mooncake's 512
unless the log says otherwise: it is inferred from the id counts (a row of L input tokens has
ceil(L / size) ids), so a log exported from a trace of 16- or 64-token blocks reads back right.
pyarrow's JSON reader reads the file; only when it fails does a line-by-line pass run, to name
the bad lines."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from .base import MAX_LENGTH, LogFormatError, ReadReport, RequestLog, Rows, finish, nonblank, select, split_lines

MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
MOONCAKE_BLOCK_SIZE = 512
_HASH_TYPE = pa.list_(pa.int64())


def read_mooncake(path: str | os.PathLike, *, on_error: str = "raise", sort: bool = False,
                  block_size: int | None = None) -> RequestLog:
    """Mooncake JSONL: one object a line with timestamp (ms), input_length, output_length, hash_ids.
    `block_size`: tokens per hash_ids block; None infers it from the id counts (`infer_block_size`).
    Given, a row whose id count is not ceil(input_length / block_size) is a bad row."""
    if block_size is not None and (not isinstance(block_size, (int, np.integer)) or block_size < 1):
        raise ValueError(f"block_size (--block-size) must be a positive whole number, got {block_size!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log not found: {path}")
    buf, starts, ends = split_lines(path)
    starts, ends, line_no = nonblank(buf, starts, ends, np.arange(1, len(starts) + 1))
    if len(starts) == 0:
        raise LogFormatError(f"{path}: empty file; expected one JSON object a line with {', '.join(MOONCAKE_FIELDS)}")
    report = ReadReport(str(path), "mooncake", rows_read=len(starts))
    schema = pa.schema([(f, pa.float64()) for f in MOONCAKE_FIELDS] + [("hash_ids", _HASH_TYPE)])
    try:
        table = pajson.read_json(io.BytesIO(select(buf, starts, ends)), parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"))
        if table.num_rows != len(starts):
            raise pa.ArrowInvalid("row count differs from line count")
        missing = np.zeros(len(starts), bool)
        for f in MOONCAKE_FIELDS:
            missing |= table.column(f).is_null().to_numpy(zero_copy_only=False)
        values = {f: table.column(f).fill_null(0).to_numpy() for f in MOONCAKE_FIELDS}
        hashes = table.column("hash_ids").combine_chunks()
        bad_json = bad_hash = np.zeros(len(starts), bool)
    except pa.ArrowInvalid:
        values, missing, bad_json, hashes, bad_hash = _mooncake_slow(buf, starts, ends)
    n_ids = hashes.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = Rows(path, "mooncake", on_error, pa.table({**values, "missing": missing, "bad_json": bad_json,
                                                      "bad_hash": bad_hash, "n_ids": n_ids,
                                                      "_row": np.arange(len(starts))}),
                 line_no, report)
    col = lambda name: rows.column(name).to_numpy()  # noqa: E731
    rows.reject(col("bad_json"), "malformed (not a JSON object with numbers)",
                lambda i: f"not a JSON object with numeric {', '.join(MOONCAKE_FIELDS)}")
    rows.reject(col("missing"), "missing field", lambda i: f"missing one of {list(MOONCAKE_FIELDS)}")
    rows.reject(col("bad_hash"), "hash_ids not a list of integers",
                lambda i: "hash_ids is not a list of whole numbers (KV block ids)")
    for f in ("input_length", "output_length"):
        rows.reject(col(f) != np.round(col(f)), "unparseable length",
                    lambda i, f=f: f"{f} is {col(f)[i]!r}; expected a whole number")
        rows.reject(col(f) < 0, "negative length", lambda i, f=f: f"{f} is {col(f)[i]!r}; lengths must not be negative")
        rows.reject(~(col(f) <= MAX_LENGTH), "length too large",
                    lambda i, f=f: f"{f} is {col(f)[i]!r}; lengths must be at most {MAX_LENGTH}")
    if block_size is None:
        block_size = infer_block_size(col("input_length").astype(np.int64), col("n_ids"))
        if block_size is None:  # ids not in fixed-size blocks of the input: kept as they are, flagged
            block_size = MOONCAKE_BLOCK_SIZE
            report.flagged[f"hash_ids counts fit no single block size ({MOONCAKE_BLOCK_SIZE} assumed; "
                           f"--block-size checks each row)"] = int((col("n_ids") > 0).sum())
    else:
        want = (col("input_length").astype(np.int64) + block_size - 1) // block_size
        rows.reject((col("n_ids") >= 0) & (col("n_ids") != want),
                    f"hash_ids count is not ceil(input_length / {block_size})",
                    lambda i: f"{col('n_ids')[i]} hash_ids for input_length {int(col('input_length')[i])}; "
                              f"expected {want[i]} blocks of {block_size} tokens (--block-size)")
    t_ms = col("timestamp")
    lengths = {"input_tokens": col("input_length").astype(np.int64),
               "output_tokens": col("output_length").astype(np.int64)}
    resolution = 1e-3 if np.all(t_ms == np.round(t_ms)) else 0.0
    log = finish(rows, t_ms / 1000.0, lengths, {"_row": col("_row")}, sort, resolution=resolution)
    kept = log.columns.pop("_row")
    if hashes.null_count < len(hashes):  # the log carries block ids (a row without them has none)
        log.blocks = hashes.take(pa.array(kept)).fill_null(pa.scalar([], _HASH_TYPE))
        log.block_size = int(block_size)
    return log


def _mooncake_slow(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Line-by-line parse, run only when the fast reader fails: marks each bad line."""
    n = len(starts)
    values = {f: np.zeros(n) for f in MOONCAKE_FIELDS}
    missing = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    bad_hash = np.zeros(n, bool)
    hashes = [None] * n
    data = buf.tobytes()
    for i in range(n):
        try:
            obj = json.loads(data[starts[i]:ends[i]])
        except ValueError:
            bad[i] = True
            continue
        if not isinstance(obj, dict):
            bad[i] = True
            continue
        for f in MOONCAKE_FIELDS:
            v = obj.get(f)
            if v is None:
                missing[i] = True
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                bad[i] = True
            else:
                values[f][i] = float(v)
        h = obj.get("hash_ids")
        if h is not None:
            if isinstance(h, list) and all(isinstance(x, int) and not isinstance(x, bool) and -2 ** 63 <= x < 2 ** 63
                                           for x in h):
                hashes[i] = h
            else:
                bad_hash[i] = True
    return values, missing, bad, pa.array(hashes, _HASH_TYPE), bad_hash


def infer_block_size(input_length: np.ndarray, n_ids: np.ndarray) -> int | None:
    """The block size every row with ids agrees with (n ids for L tokens allows the sizes in
    [ceil(L / n), floor((L - 1) / (n - 1))]); of those, Mooncake's 512, else the largest power of
    two, else the smallest. None when no single size fits every row."""
    has = n_ids > 0
    if not has.any():
        return MOONCAKE_BLOCK_SIZE
    L, n = input_length[has], n_ids[has]
    lo = int((-(-L // n)).max())
    hi = int(np.where(n > 1, (L - 1) // np.maximum(n - 1, 1), 1 << 40).min())
    if lo > hi:
        return None
    if lo <= MOONCAKE_BLOCK_SIZE <= hi:
        return MOONCAKE_BLOCK_SIZE
    power = 1 << (hi.bit_length() - 1)
    return power if power >= lo else lo
