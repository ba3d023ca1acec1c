"""The summary of a requests.arrow read batch by batch equals `summarize` of the whole table:
exactly, except the means (summed batch by batch, not pairwise: 1e-12 relative)."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from servegen_fast.replay.filesummary import _lerp, _ranks, _Quantiles, summarize_file
from servegen_fast.replay.results import QUANTILES, read_requests, summarize
from servegen_fast.simulate.cluster import simulate_trace
from test_simulate import profile, trace


def _select(v: np.ndarray) -> dict:
    """The order statistics by radix select over batches of 7 (as summarize_file finds them)."""
    q = _Quantiles(len(v))
    for level in range(4):
        for lo in range(0, len(v), 7):
            q.count(v[lo:lo + 7], level)
        q.settle(level)
    return q.values()


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_percentiles_equal_numpys(n):
    rng = np.random.default_rng(n)
    for v in (rng.lognormal(-3, 2, n), rng.normal(0, 1, n), np.round(rng.normal(0, 3, n)),  # negatives, ties
              np.zeros(n), rng.choice([-0.0, 0.0, 1e-300, -5e-324, 7.5], n)):
        got = _select(v)
        want = np.percentile(v, QUANTILES)
        assert [got[q] for q in QUANTILES] == list(want), v
    assert _ranks(1, 50) == (0,) and _lerp(1, 99, {0: np.float64(2.0)}) == 2.0


def _dicts_equal(a, b, path=""):
    assert type(a) is type(b) or all(isinstance(x, (int, float)) for x in (a, b)), path  # np.float64 is a float
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _dicts_equal(a[k], b[k], f"{path}.{k}")
    elif path.endswith(".mean"):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=0), path
    else:
        assert a == b, path


@pytest.mark.parametrize("slo", [{}, {"slo_ttft": 0.05, "slo_tpot": 0.02}])
def test_file_summary_equals_the_whole_tables(tmp_path, slo):
    t = trace(n=700, span=30.0, seed=8)
    simulate_trace(t, tmp_path / "r", profile=profile(kv_blocks=100), instances=2)
    table = read_requests(tmp_path / "r")
    path = tmp_path / "batched.arrow"
    with ipc.new_file(str(path), table.schema) as w:  # uneven batches
        for lo, hi in [(0, 1), (1, 250), (250, 251), (251, 700)]:
            w.write_table(table.slice(lo, hi - lo))
    stats = pa.table({"time": [0.0, 1.0], "kv_used_fraction": [0.5, 0.25]})
    want = summarize(table, stats=stats, **slo)
    got = summarize_file(path, stats=stats, **slo)
    assert want["counts"]["failed"] and want["latency"]["ttft"]["count"] > 600  # drops, and enough to select in
    _dicts_equal(got, want)


def test_a_file_without_the_columns_is_an_error_naming_it(tmp_path):
    path = tmp_path / "x.arrow"
    t = pa.table({"status": ["completed"], "released": [0.0]})
    with ipc.new_file(str(path), t.schema) as w:
        w.write_table(t)
    with pytest.raises(ValueError, match=r"x\.arrow: not a requests file \(no column scheduled, lateness"):
        summarize_file(path)
