"""The builtin synthetic language pool shipped in servegen_fast/data/builtin.parquet.

It is drawn by scripts/builtin_pool/ from the summary statistics in
scripts/builtin_pool/summary.json (see docs/builtin-pool.md); these tests check the shipped
file is valid, has the documented properties, and is exactly what the script produces, and
that the statistics are those of ServeGen's data.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from servegen_fast.characterize.laws import weibull_cv
from servegen_fast.io.pool_file import builtin_pool_path, load_pool_file, open_pool
from servegen_fast.model.fields import LANGUAGE_FIELDS, LAW_GAMMA, LAW_IDLE, LAW_WEIBULL, NO_DIST
from servegen_fast.model.special import gammaln

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
SCRIPT = SCRIPTS / "derive_builtin_pool.py"
if str(SCRIPTS) not in sys.path:  # scripts/builtin_pool is a package of scripts, not of the library
    sys.path.insert(0, str(SCRIPTS))

from builtin_pool import design  # noqa: E402
from builtin_pool.summary import SUMMARY_PATH, dumps, leaves, load_summary  # noqa: E402

SUMMARY = load_summary()
N_CLIENTS, N_WINDOWS, N_LENGTH_WINDOWS = 300, 2016, 56
MAX_TOKENS = {"input_tokens": 131072, "output_tokens": 16384}
TOP10_SHARE_MIN = 0.7       # ServeGen: 0.75 (m-large), 0.80 (m-mid), 0.77 (m-small); shipped pool 0.82
LAW_MIX_TOL = 0.01          # |Weibull share of active windows - summary target (0.2446)|
DAY_CORR_MIN = 0.9


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("derive_builtin_pool", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pool():
    return open_pool("builtin")


def test_file_is_small_and_loads_fast():
    path = builtin_pool_path()
    assert path.is_file(), f"{path} missing: run scripts/derive_builtin_pool.py"
    assert path.stat().st_size < 2_000_000
    t0 = time.perf_counter()
    open_pool("builtin")
    assert time.perf_counter() - t0 < 2.0


def test_shape(pool):
    assert (pool.category, pool.model, pool.fields) == ("language", "builtin", LANGUAGE_FIELDS)
    assert (pool.n_clients, pool.n_windows, pool.dist_id.shape) == (N_CLIENTS, N_WINDOWS,
                                                                      (N_CLIENTS, N_LENGTH_WINDOWS, 2))
    assert (pool.window_size, pool.length_window_size, pool.origin, pool.present) == (600, 21600, 0, None)
    assert np.array_equal(pool.client_ids, np.arange(N_CLIENTS))
    assert np.array_equal(pool.window_start, np.arange(N_WINDOWS) * 600)
    assert np.all(pool.window_len == 600)
    assert np.array_equal(pool.window_index, np.arange(N_WINDOWS))
    assert np.array_equal(pool.length_index, np.arange(N_WINDOWS) // 36)
    assert pool.duration == 14 * 86400


def test_arrival_arrays_valid(pool):
    rate, cv, law, shape, scale = pool.rate, pool.cv, pool.law, pool.shape, pool.scale
    for a in (rate, cv, shape, scale):
        assert a.dtype == np.float64 and np.all(np.isfinite(a)) and np.all(a >= 0)
    assert law.dtype == np.uint8 and set(np.unique(law)) == {LAW_IDLE, LAW_GAMMA, LAW_WEIBULL}
    idle = law == LAW_IDLE
    assert np.array_equal(idle, rate == 0)                         # idle <=> law 0 <=> no rate
    for a in (cv, shape, scale):
        assert np.all(a[idle] == 0) and np.all(a[~idle] > 0)
    assert pool.active.any(axis=1).all()                          # every client has traffic
    min_rate = SUMMARY["activity"]["min_active_rate"]
    assert rate[~idle].min() >= min_rate * (1 - 1e-9)              # ServeGen's smallest active rate
    lo, hi = design.CV_RANGE
    assert cv[~idle].min() >= lo * 0.97 and cv[~idle].max() <= hi * 1.03

    g = law == LAW_GAMMA
    np.testing.assert_allclose(shape[g], 1 / cv[g] ** 2, rtol=1e-9)
    np.testing.assert_allclose(shape[g] * scale[g] * rate[g], 1.0, rtol=1e-9)   # mean 1/rate
    w = law == LAW_WEIBULL
    c = shape[w]
    assert c.min() >= design.WEIBULL_C_RANGE[0] and c.max() <= design.WEIBULL_C_RANGE[1]
    np.testing.assert_allclose(weibull_cv(c), cv[w], rtol=0.01)
    gamma1 = np.exp(gammaln(1 + 1 / c))
    np.testing.assert_allclose(scale[w] * gamma1 * rate[w], 1.0, rtol=1e-9)


def test_distributions_valid(pool):
    t = pool.dists
    assert t.offsets[0] == 0 and t.offsets[-1] == len(t.values) == len(t.cdf)
    assert np.all(np.diff(t.offsets) > 0)
    assert np.all(pool.dist_id != NO_DIST) and pool.dist_id.min() >= 0 and pool.dist_id.max() < len(t)
    assert len(np.unique(pool.dist_id)) == len(t)                 # no unused distributions
    seg_start = np.zeros(len(t.values), bool)
    seg_start[t.offsets[:-1]] = True
    dv, dc = np.diff(t.values), np.diff(t.cdf)
    inner = ~seg_start[1:]
    assert np.all(dv[inner] > 0) and np.all(dc[inner] > 0)        # ascending support, positive mass
    assert np.all(t.cdf[t.offsets[1:] - 1] == 1.0) and np.all(t.cdf[t.offsets[:-1]] > 0)
    assert np.all(t.values >= 1) and np.all(t.values == np.round(t.values))
    for f, name in enumerate(pool.fields):
        ids = np.unique(pool.dist_id[:, :, f])
        assert t.stat("max")[ids].max() <= MAX_TOKENS[name]
    assert len(t.values) < 200_000                                # compact support


def test_daily_profile_repeats(pool):
    agg = pool.aggregate_rate()
    days = agg.reshape(14, 144)
    corr = [np.corrcoef(days[i], days[i + 1])[0, 1] for i in range(13)]
    assert min(corr) >= DAY_CORR_MIN, corr
    assert agg.mean() == pytest.approx(design.TARGET_RATE, rel=0.02)
    prof = SUMMARY["profile"]
    weekend = np.isin(np.arange(14) % 7, prof["weekend_days"])
    ratio = days[weekend].mean() / days[~weekend].mean()
    assert ratio == pytest.approx(prof["weekend_factor"], abs=0.05)


def test_client_sizes_heavy_tailed(pool):
    mean_rate = np.sort(pool.rate.mean(axis=1))[::-1]
    top10 = mean_rate[: N_CLIENTS // 10].sum() / mean_rate.sum()
    assert top10 > TOP10_SHARE_MIN
    assert mean_rate[0] / np.median(mean_rate) > 100


def test_law_mix(pool):
    law = pool.law[pool.active]
    weibull = (law == LAW_WEIBULL).mean()
    assert abs(weibull - SUMMARY["law"]["weibull_share"]) <= LAW_MIX_TOL
    assert np.all((law == LAW_GAMMA) | (law == LAW_WEIBULL))


def test_shipped_file_is_what_the_script_makes(pool, script, tmp_path, capsys):
    out = tmp_path / "builtin.parquet"
    assert script.main(["--out", str(out), "--seed", str(design.DEFAULT_SEED)]) == 0
    assert "builtin pool summary" in capsys.readouterr().out
    new = load_pool_file(out)
    for name in ("category", "model", "fields", "window_size", "length_window_size", "origin"):
        assert getattr(new, name) == getattr(pool, name), name
    for name in ("client_ids", "window_start", "window_len", "window_index", "length_index", "law", "dist_id"):
        a, b = getattr(new, name), getattr(pool, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    # floats: equal up to last-bit differences of exp/log/erfc between platforms
    for name in ("rate", "cv", "shape", "scale"):
        np.testing.assert_allclose(getattr(new, name), getattr(pool, name), rtol=1e-12, atol=0, err_msg=name)
    assert np.array_equal(new.dists.offsets, pool.dists.offsets)
    assert np.array_equal(new.dists.values, pool.dists.values)
    np.testing.assert_allclose(new.dists.cdf, pool.dists.cdf, rtol=0, atol=1e-12)


def test_summary_file_reads_back_exactly():
    # the pool is drawn from these floats: the file must give them back bit for bit, and be
    # written as the script writes it (so --refresh-summary makes no spurious diff)
    text = SUMMARY_PATH.read_text()
    assert dumps(SUMMARY) == text
    assert json.loads(text) == SUMMARY
    assert [type(v) for _, v in leaves(json.loads(dumps(SUMMARY)))] == [type(v) for _, v in leaves(SUMMARY)]


def _source_hashes() -> dict:
    files = sorted(SCRIPTS.rglob("*.py")) + [SUMMARY_PATH]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.mark.slow
def test_summary_is_derived_from_the_data(servegen_root, script, tmp_path, capsys):
    """--data-dir recomputes the statistics from ServeGen's data; --refresh-summary writes them
    to the summary file named (here a copy), never to a source file."""
    before = _source_hashes()
    target = tmp_path / "summary.json"
    target.write_text(SUMMARY_PATH.read_text())
    assert script.main(["--data-dir", str(servegen_root), "--refresh-summary", "--summary", str(target),
                        "--out", str(tmp_path / "builtin.parquet")]) == 0
    assert "rewritten" in capsys.readouterr().out
    assert _source_hashes() == before
    derived = dict(leaves(load_summary(target)))
    embedded = dict(leaves(SUMMARY))
    assert derived.keys() == embedded.keys()
    for k, v in embedded.items():
        if isinstance(v, float):
            assert derived[k] == pytest.approx(v, rel=2e-3, abs=1e-6), k
        else:
            assert derived[k] == v, k
