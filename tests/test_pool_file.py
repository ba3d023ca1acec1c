"""Pool files: exact save/load round trip, clear errors, no temporary files left behind."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servegen_fast.io import arrow_numpy, pool_codec
from servegen_fast.io.pool_file import load_pool_file, save_pool

ARRAYS = ("client_ids", "window_start", "window_len", "window_index", "length_index",
          "rate", "cv", "law", "shape", "scale", "dist_id")
SCALARS = ("category", "model", "fields", "window_size", "length_window_size", "origin")


@pytest.fixture(scope="module")
def m_mid(real_pool):
    return real_pool("language/m-mid")


@pytest.fixture(scope="module")
def deepseek(real_pool):
    return real_pool("reason/deepseek-r1")


def assert_identical(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    for name in ("values", "cdf", "offsets"):
        x, y = getattr(a.dists, name), getattr(b.dists, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg="dists." + name)
    for name in SCALARS:
        assert getattr(a, name) == getattr(b, name), name
    assert type(b.fields) is tuple
    assert (a.present is None) == (b.present is None)
    if a.present is not None:
        assert b.present.dtype == np.bool_
        np.testing.assert_array_equal(a.present, b.present)


def _only(path) -> list[str]:
    return sorted(os.listdir(path))


@pytest.mark.parametrize("which", ["m-mid", "m-mid span", "m-mid span filtered", "deepseek filtered", "empty"])
def test_round_trip_exact(m_mid, deepseek, tmp_path, which):
    pool = {
        "m-mid": lambda: m_mid,
        "m-mid span": lambda: m_mid.span(86_400 + 300, 3 * 86_400),
        "m-mid span filtered": lambda: m_mid.span(86_400, 2 * 86_400).filter_by_cv(0.5, 2.0),
        "deepseek filtered": lambda: deepseek.filter_by_avg_output_len(500, 5000),
        "empty": lambda: m_mid.span(10**8, 10**8 + 600),
    }[which]()
    if "filtered" in which:
        assert pool.present is not None and not pool.present.all()
    path = save_pool(pool, tmp_path / "sub" / "pool.parquet")
    assert path == tmp_path / "sub" / "pool.parquet"
    assert _only(tmp_path / "sub") == ["pool.parquet"]  # no temporary file left behind
    back = load_pool_file(path)
    assert_identical(pool, back)
    # statistics and views still agree after the round trip
    np.testing.assert_array_equal(back.aggregate_rate(), pool.aggregate_rate())
    np.testing.assert_array_equal(back.active, pool.active)


def test_round_trip_overwrites(deepseek, tmp_path):
    path = tmp_path / "pool.parquet"
    save_pool(deepseek, path)
    small = deepseek.span(0, 3600)
    save_pool(small, path)
    assert _only(tmp_path) == ["pool.parquet"]
    assert_identical(small, load_pool_file(path))


def test_failed_write_leaves_nothing(deepseek, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(pool_codec.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        save_pool(deepseek.span(0, 3600), tmp_path / "pool.parquet")
    assert _only(tmp_path) == []


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pool file not found: .*nothing\.parquet"):
        load_pool_file(tmp_path / "nothing.parquet")
    (tmp_path / "a_dir.parquet").mkdir()
    with pytest.raises(FileNotFoundError, match=r"pool file not found"):
        load_pool_file(tmp_path / "a_dir.parquet")


def test_non_pool_parquet(tmp_path):
    path = tmp_path / "trace.parquet"
    pq.write_table(pa.table({"timestamp": [0.0, 1.0], "client_id": pa.array([1, 2], pa.uint32())}), path)
    with pytest.raises(ValueError, match=r"trace\.parquet: Parquet file without servegen-fast pool metadata"):
        load_pool_file(path)


def test_other_format_in_metadata(tmp_path):
    path = tmp_path / "future.parquet"
    meta = {"format": "servegen-fast-pool", "version": 99}
    table = pa.table({"x": [1]}).replace_schema_metadata({b"servegen_fast.pool": json.dumps(meta).encode()})
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=r"future\.parquet: unsupported pool format 'servegen-fast-pool' version 99"):
        load_pool_file(path)
    meta = {"format": "something-else", "version": 1}
    pq.write_table(table.replace_schema_metadata({b"servegen_fast.pool": json.dumps(meta).encode()}), path)
    with pytest.raises(ValueError, match=r"unsupported pool format 'something-else'"):
        load_pool_file(path)


@pytest.mark.parametrize("content", [b"", b"not a parquet file at all" * 10, b"PAR1" + bytes(100) + b"PAR1"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.parquet: not a readable Parquet pool file"):
        load_pool_file(path)


def test_truncated_pool_file(deepseek, tmp_path):
    path = save_pool(deepseek, tmp_path / "pool.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"pool\.parquet: not a readable Parquet pool file"):
        load_pool_file(path)


@pytest.mark.parametrize("raw, match", [(b"{not json", r"corrupt servegen-fast pool metadata"),
                                        (b"[1, 2]", r"corrupt servegen-fast pool metadata \(not a JSON object\)"),
                                        (json.dumps({"format": "servegen-fast-pool", "version": 1}).encode(),
                                         r"incomplete or inconsistent pool file \(KeyError")])
def test_corrupt_metadata(tmp_path, raw, match):
    path = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata({b"servegen_fast.pool": raw}), path)
    with pytest.raises(ValueError, match=r"meta\.parquet: " + match):
        load_pool_file(path)


def _tamper(deepseek, tmp_path, edit):
    path = save_pool(deepseek.span(0, 7200), tmp_path / "pool.parquet")
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"servegen_fast.pool"])
    table = edit(table, meta)
    pq.write_table(table.replace_schema_metadata({b"servegen_fast.pool": json.dumps(meta).encode()}), path)
    return path


def test_missing_column(deepseek, tmp_path):
    path = _tamper(deepseek, tmp_path, lambda t, m: t.drop_columns(["rate"]))
    with pytest.raises(ValueError, match=r"pool\.parquet: incomplete or inconsistent pool file \(KeyError"):
        load_pool_file(path)


def test_inconsistent_shapes(deepseek, tmp_path):
    def edit(t, meta):
        meta["arrays"]["rate"][0] = meta["arrays"]["rate"][0][::-1]  # [W, C] instead of [C, W]
        return t
    path = _tamper(deepseek, tmp_path, edit)
    with pytest.raises(ValueError, match=r"pool\.parquet: incomplete or inconsistent pool file .*rate has shape"):
        load_pool_file(path)


def test_fitted_fields_round_trip_and_version(m_mid, tmp_path):
    """Modulation arrays, the length correlation and the clock step survive a save; a pool
    without them is still written as format version 1 (older readers load it)."""
    pool = m_mid.span(0, 3600)
    plain = save_pool(pool, tmp_path / "plain.parquet")
    assert json.loads(pq.read_schema(plain).metadata[b"servegen_fast.pool"])["version"] == 1
    c, w = pool.rate.shape
    fitted = pool.replace(mod_sigma=np.linspace(0, 1, c * w).reshape(c, w), mod_tau=np.full((c, w), 30.0),
                          length_correlation=0.08, clock_step=3.0)
    back = load_pool_file(save_pool(fitted, tmp_path / "fitted.parquet"))
    assert_identical(fitted, back)
    np.testing.assert_array_equal(back.mod_sigma, fitted.mod_sigma)
    np.testing.assert_array_equal(back.mod_tau, fitted.mod_tau)
    assert back.length_correlation == 0.08 and back.clock_step == 3.0
    assert load_pool_file(plain).mod_sigma is None and load_pool_file(plain).length_correlation is None
    # views slice the modulation with the windows and clients
    v = back.span(600, 1800).select_clients(np.arange(3))
    assert v.mod_sigma.shape == v.rate.shape
    with pytest.raises(ValueError, match="come together"):
        pool.replace(mod_sigma=np.zeros((c, w)))


@pytest.mark.parametrize("values", [
    pa.array(np.arange(10, dtype=np.int64)), pa.array(np.linspace(0, 1, 7)), pa.array(np.arange(9, dtype=np.uint8)),
    pa.array(np.arange(12, dtype=np.int32)).slice(3, 5), pa.array([True, False, True]), pa.array([1.0, None, 2.0]),
    pa.array([], pa.int64()), pa.array(np.arange(4.0)).slice(4),
], ids=["int64", "float64", "uint8", "sliced-int32", "bool", "nulls", "empty", "sliced-empty"])
def test_array_conversion_equals_pyarrows(values):
    """The buffer views the pool codec takes (io/arrow_numpy.py) equal pyarrow's own conversions,
    both ways."""
    got, want = arrow_numpy.to_numpy(values), values.to_numpy(zero_copy_only=False)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if values.null_count == 0:
        back = arrow_numpy.to_arrow(got, values.type)
        assert back.type == values.type and back.equals(values)


def test_loading_and_saving_import_no_pandas(deepseek, tmp_path):
    """A pool load, and a save (the pool cache's, after a first parse), leave pandas unimported
    (pyarrow's conversions from and to NumPy would import it: 0.2-0.3 s of a new process)."""
    import subprocess
    import sys

    path = save_pool(deepseek, tmp_path / "p.parquet")
    code = ("import sys; from servegen_fast.io.pool_file import load_pool_file, save_pool; "
            f"save_pool(load_pool_file({str(path)!r}), {str(tmp_path / 'q.parquet')!r}); "
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
