"""Pool files: one Parquet file per pool (written and read here; `pool_file.py` resolves a
pool argument and re-exports these).

A pool file holds a single row whose columns are the pool's flattened arrays (as list
columns, so one file carries arrays of different lengths); shapes and scalars live in the
schema metadata under ``servegen_fast.pool``. Loading decodes the file; the arrays are views
of its buffers where the types allow.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .arrow_numpy import to_arrow, to_numpy
from .atomic import atomic_path, check_output
from ..model.distributions import DistTable
from ..model.pool import ClientPool

FORMAT = "servegen-fast-pool"
FORMAT_VERSION = 2  # 2: optional intra-window modulation arrays and a length correlation (fitted pools)
_META_KEY = b"servegen_fast.pool"
_ARRAYS = ("client_ids", "window_start", "window_len", "window_index", "length_index",
           "rate", "cv", "law", "shape", "scale", "dist_id", "present", "mod_sigma", "mod_tau")
_TABLE = ("values", "cdf", "offsets")


def save_pool(pool: ClientPool, path: str | os.PathLike, *, compression: str = "zstd",
              use_dictionary: bool = True) -> Path:
    """Write `pool` to a Parquet pool file (temporary name, then rename). `compression` and
    `use_dictionary` are pyarrow's: the pool cache trades size for speed (io/pool_cache.py)."""
    path = Path(path)
    cols, shapes = {}, {}
    for name in _ARRAYS:
        arr = getattr(pool, name)
        if arr is None:
            continue
        arr = np.ascontiguousarray(arr)
        shapes[name] = [list(arr.shape), arr.dtype.str]
        cols[name] = _list_column(arr.reshape(-1))
    for name in _TABLE:
        arr = getattr(pool.dists, name)
        shapes["dists." + name] = [list(arr.shape), arr.dtype.str]
        cols["dists." + name] = _list_column(arr)
    fitted = pool.mod_sigma is not None or pool.length_correlation is not None or pool.clock_step is not None
    meta = {"format": FORMAT, "version": FORMAT_VERSION if fitted else 1, "category": pool.category, "model": pool.model,
            "fields": list(pool.fields), "window_size": pool.window_size,
            "length_window_size": pool.length_window_size, "origin": pool.origin, "arrays": shapes}
    for name in ("length_correlation", "clock_step"):
        if getattr(pool, name) is not None:
            meta[name] = float(getattr(pool, name))
    table = pa.Table.from_arrays(list(cols.values()), names=list(cols))  # not pa.table: it imports pandas
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    check_output(path, "file")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression, use_dictionary=use_dictionary)
    return path


def _list_column(flat: np.ndarray) -> pa.Array:
    return pa.LargeListArray.from_arrays(to_arrow(np.array([0, len(flat)], np.int64)), to_arrow(flat))


def load_pool_file(path: str | os.PathLike) -> ClientPool:
    """Read a pool file written by `save_pool`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pool file not found: {path}")
    try:
        table = pq.ParquetFile(path).read()  # not read_table: that imports pyarrow.dataset (~0.4 s)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet pool file ({e})") from None
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise ValueError(f"{path}: Parquet file without servegen-fast pool metadata (is it a trace?)")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{path}: corrupt servegen-fast pool metadata ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: corrupt servegen-fast pool metadata (not a JSON object)")
    if meta.get("format") != FORMAT or meta.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported pool format {meta.get('format')!r} version {meta.get('version')!r}")

    def array(name: str) -> np.ndarray:
        shape, dtype = meta["arrays"][name]
        flat = to_numpy(table.column(name).chunk(0).values)
        return np.ascontiguousarray(flat.astype(np.dtype(dtype), copy=False).reshape(shape))

    try:
        arrays = {name: array(name) for name in _ARRAYS if name in meta["arrays"]}
        dists = DistTable(*(array("dists." + n) for n in _TABLE))
        return ClientPool(category=meta["category"], model=meta["model"], fields=tuple(meta["fields"]),
                          dists=dists, window_size=meta["window_size"],
                          length_window_size=meta["length_window_size"], origin=meta["origin"],
                          length_correlation=meta.get("length_correlation"), clock_step=meta.get("clock_step"),
                          **arrays)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: incomplete or inconsistent pool file ({type(e).__name__}: {e})") from None

