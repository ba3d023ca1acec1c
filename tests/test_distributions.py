"""DistTableBuilder (dedup, normalisation, zero-probability points) and DistTable.stat."""
from __future__ import annotations

import numpy as np
import pytest

from servegen_fast.model.distributions import DistTable, DistTableBuilder

QUANTILES = {"p05": 0.05, "p50": 0.5, "p95": 0.95, "p99": 0.99}


def _table(segments: list[tuple[list[float], list[float]]]) -> DistTable:
    """A DistTable built directly from (values, cdf) segments, bypassing the builder."""
    values = np.concatenate([np.asarray(v, np.float64) for v, _ in segments])
    cdf = np.concatenate([np.asarray(c, np.float64) for _, c in segments])
    offsets = np.concatenate(([0], np.cumsum([len(v) for v, _ in segments]))).astype(np.int64)
    return DistTable(values, cdf, offsets)


def _direct_stat(values: np.ndarray, cdf: np.ndarray, name: str) -> float:
    """Per-distribution statistic, the obvious way (ServeGen's compute_stats on the CDF)."""
    if name == "max":
        return float(values[-1])
    if name == "avg":
        return float(np.sum(values * np.diff(cdf, prepend=0.0)))
    q = QUANTILES[name]
    for v, c in zip(values, cdf):
        if c >= q:
            return float(v)
    return float(values[-1])


# --------------------------------------------------------------------------- builder
def test_builder_dedups_identical_distributions():
    b = DistTableBuilder()
    a = b.add([1, 2, 3], [0.2, 0.3, 0.5])
    same = b.add([1, 2, 3], [0.2, 0.3, 0.5])
    scaled = b.add([1, 2, 3], [2.0, 3.0, 5.0])        # same after normalisation
    shuffled = b.add([3, 1, 2], [0.5, 0.2, 0.3])      # same after sorting
    with_zero = b.add([1, 2, 3, 4], [0.2, 0.3, 0.5, 0.0])  # same after dropping the zero point
    other = b.add([1, 2, 3], [0.3, 0.2, 0.5])
    assert a == same == scaled == shuffled == with_zero
    assert other != a
    table = b.build()
    assert len(table) == 2
    v, p = table.get(a)
    np.testing.assert_array_equal(v, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(p, [0.2, 0.3, 0.5], rtol=0, atol=1e-15)
    v, p = table.get(other)
    np.testing.assert_allclose(p, [0.3, 0.2, 0.5], rtol=0, atol=1e-15)


def test_builder_normalises_last_cdf_exactly_one():
    rng = np.random.default_rng(1234)
    b = DistTableBuilder()
    ids, raw = [], []
    for k in range(200):
        n = int(rng.integers(1, 60))
        values = rng.choice(100_000, size=n, replace=False).astype(float)
        probs = rng.random(n) * rng.choice([1e-6, 0.3, 1.0, 7.0])  # sums far from and near 1
        ids.append(b.add(values, probs))
        raw.append((values, probs))
    table = b.build()
    assert len(table) == 200
    ends = table.cdf[table.offsets[1:] - 1]
    assert np.all(ends == 1.0)  # exactly, so an inverse-CDF lookup cannot run off the end
    for k, (values, probs) in zip(ids, raw):
        order = np.argsort(values)
        v, p = table.get(k)
        np.testing.assert_array_equal(v, values[order])
        np.testing.assert_allclose(p, probs[order] / probs.sum(), rtol=1e-12, atol=1e-15)
        lo, hi = table.offsets[k], table.offsets[k + 1]
        assert np.all(np.diff(table.cdf[lo:hi]) > 0)
        assert np.all(np.diff(table.values[lo:hi]) > 0)


def test_builder_drops_zero_probability_points():
    b = DistTableBuilder()
    k = b.add([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.4, 0.0, 0.6, 0.0])
    table = b.build()
    v, p = table.get(k)
    np.testing.assert_array_equal(v, [0.25, 0.75])
    np.testing.assert_allclose(p, [0.4, 0.6], rtol=0, atol=1e-15)
    assert np.all(p > 0)


def test_builder_offsets_and_empty_table():
    table = DistTableBuilder().build()
    assert len(table) == 0
    for name in ("avg", "p05", "p50", "p95", "p99", "max"):
        assert table.stat(name).shape == (0,)
    b = DistTableBuilder()
    b.add([5], [1.0])
    b.add([1, 2], [0.5, 0.5])
    t = b.build()
    np.testing.assert_array_equal(t.offsets, [0, 1, 3])
    np.testing.assert_array_equal(t.values, [5, 1, 2])
    np.testing.assert_array_equal(t.cdf, [1.0, 0.5, 1.0])


# --------------------------------------------------------------------------- stats
@pytest.mark.parametrize("name", ["avg", "p05", "p50", "p95", "p99", "max"])
def test_stat_matches_direct_numpy(name):
    rng = np.random.default_rng(20240607)
    b = DistTableBuilder()
    for _ in range(500):
        n = int(rng.integers(1, 300))
        values = np.sort(rng.choice(50_000, size=n, replace=False)).astype(float)
        probs = rng.dirichlet(np.full(n, rng.choice([0.1, 1.0, 10.0])))
        probs[rng.random(n) < 0.05] = 0.0  # some zero points
        if probs.sum() == 0:
            probs[0] = 1.0
        b.add(values, probs)
    table = b.build()
    got = table.stat(name)
    assert got.shape == (len(table),)
    want = np.array([_direct_stat(table.values[lo:hi], table.cdf[lo:hi], name)
                     for lo, hi in zip(table.offsets[:-1], table.offsets[1:])])
    if name == "avg":
        np.testing.assert_allclose(got, want, rtol=1e-12)
    else:
        np.testing.assert_array_equal(got, want)
    assert table.stat(name) is got  # cached


def test_percentile_is_first_value_reaching_q():
    # cumulative probability exactly q counts as reaching it (ServeGen: first cum >= q)
    table = _table([([1, 2], [0.5, 1.0]), ([1, 2, 3], [0.25, 0.95, 1.0]), ([7, 8, 9], [0.1, 0.99, 1.0])])
    np.testing.assert_array_equal(table.stat("p50"), [1, 2, 8])
    np.testing.assert_array_equal(table.stat("p95"), [2, 2, 8])
    np.testing.assert_array_equal(table.stat("p99"), [2, 3, 8])
    np.testing.assert_array_equal(table.stat("max"), [2, 3, 9])
    np.testing.assert_allclose(table.stat("avg"), [1.5, 0.25 + 2 * 0.7 + 3 * 0.05, 0.7 + 8 * 0.89 + 9 * 0.01])


def test_percentile_does_not_depend_on_position_in_table():
    # A CDF that stays a hair below q must not count as reaching it, wherever the
    # distribution sits in the table (a large table must not lose the precision).
    eps = 1e-13
    k = 30_000
    segs = [([10.0, 20.0, 30.0], [0.5 - eps, 0.95 - eps, 1.0])] * k
    segs.append(([10.0, 20.0, 30.0], [0.99 - eps, 0.995, 1.0]))
    table = _table(segs)
    p50, p95, p99 = table.stat("p50"), table.stat("p95"), table.stat("p99")
    assert np.all(p50[:k] == 20.0)
    assert np.all(p95[:k] == 30.0)
    assert p99[k] == 20.0
