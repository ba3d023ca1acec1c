"""A partitioned trace directory is a dataset for pyarrow, DuckDB, Polars and pandas as it is
(issue 19, row 13): the manifest is a zero-row file of the same format and schema, so no reader
trips on a file of another extension. Each reader is tested where it installs."""
from __future__ import annotations

import numpy as np
import pytest

from servegen_fast.cli import main
from servegen_fast.io.trace import read_trace


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "trace_dir"
    assert main(["generate", "--pool", "builtin", "--duration", "3h", "--rate", "2", "--seed", "1",
                 "--partition", "hour", "-o", str(out), "-q"]) == 0
    want = read_trace(out)
    assert want.num_rows > 1000
    return out, np.sort(want.column("timestamp").to_numpy())


def test_pyarrow_dataset(parts):
    import pyarrow.dataset as ds

    out, ts = parts
    got = ds.dataset(out, format="parquet").to_table()
    assert np.array_equal(np.sort(got.column("timestamp").to_numpy()), ts)


def test_duckdb(parts):
    duckdb = pytest.importorskip("duckdb")
    out, ts = parts
    for query in (f"SELECT timestamp FROM read_parquet('{out}')", f"SELECT timestamp FROM '{out}/*.parquet'"):
        got = np.array([r[0] for r in duckdb.sql(query + " ORDER BY timestamp").fetchall()])
        assert np.array_equal(got, ts), query


def test_polars(parts):
    pl = pytest.importorskip("polars")
    out, ts = parts
    for got in (pl.scan_parquet(f"{out}/").collect(), pl.read_parquet(out)):
        assert np.array_equal(np.sort(got["timestamp"].to_numpy()), ts)


def test_pandas(parts):
    pd = pytest.importorskip("pandas")
    out, ts = parts
    got = pd.read_parquet(out)
    assert np.array_equal(np.sort(got["timestamp"].to_numpy()), ts)
