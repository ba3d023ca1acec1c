"""Fitting pools to logs (servegen_fast.characterize.fit): round-trip identifiability on synthetic pools,
sparse-window and length rules, options and keys, and the fidelity targets on the real logs.

Tolerances are stated where used; seeds are fixed."""
from __future__ import annotations

import math

import numpy as np
import pytest

from servegen_fast.characterize import laws as L
from servegen_fast.characterize.analyze import compare
from servegen_fast.model.distributions import DistTableBuilder
from servegen_fast.characterize.fit import (LEVEL_CLIENT, LEVEL_IDLE, LEVEL_LOG, LEVEL_WINDOW, FitOptions, fit_pool,
                               suggested_correlation)
from servegen_fast.sample.generate import generate_table
from servegen_fast.model.fields import LAW_EXPONENTIAL, LAW_GAMMA, LAW_IDLE, LAW_WEIBULL
from servegen_fast.model.pool import ClientPool, regular_grid
from servegen_fast.io.pool_file import open_pool, save_pool
from servegen_fast.io.sources import ReadReport, RequestLog, read_log

W = 6  # windows of 600 s: one hour
# client -> (law, shape, rate per window); a sparse client at 0.008/s (~4 requests a window)
CLIENTS = {11: (LAW_GAMMA, 0.25, 2.0), 12: (LAW_WEIBULL, 0.6, 1.5), 13: (LAW_EXPONENTIAL, 1.0, 1.2),
           14: (LAW_GAMMA, 1.0 / 1.5 ** 2, 0.008)}
LENGTHS = {11: ([50.0, 200.0, 900.0], [0.5, 0.3, 0.2]), 12: (np.arange(1, 301) * 10.0, np.ones(300)),
           13: ([5.0, 6.0], [0.1, 0.9]), 14: ([1000.0], [1.0])}


def known_pool() -> ClientPool:
    ids = np.array(list(CLIENTS), np.int64)
    law = np.repeat(np.array([CLIENTS[c][0] for c in ids], np.uint8)[:, None], W, axis=1)
    shape = np.repeat(np.array([CLIENTS[c][1] for c in ids])[:, None], W, axis=1)
    rate = np.repeat(np.array([CLIENTS[c][2] for c in ids])[:, None], W, axis=1) * np.linspace(0.8, 1.2, W)
    rate[2, 3] = 0.0  # one idle window
    law[2, 3] = LAW_IDLE
    cv = L.law_cv(law, shape)
    scale = L.law_scale(law, shape, 1.0 / np.where(rate > 0, rate, 1.0))
    b = DistTableBuilder()
    dist = np.array([[[b.add(*LENGTHS[c]), b.add(*LENGTHS[c])]] for c in ids], np.int32)
    start, wlen, widx, lidx = regular_grid(W, 600, 21600)
    return ClientPool(category="language", model="known", client_ids=ids, window_start=start, window_len=wlen,
                      window_index=widx, length_index=lidx, rate=rate, cv=cv, law=law, shape=shape, scale=scale,
                      fields=("input_tokens", "output_tokens"), dist_id=dist, dists=b.build())


def as_log(table, duration) -> RequestLog:
    n = table.num_rows
    return RequestLog(timestamp=table.column("timestamp").to_numpy(),
                      input_tokens=table.column("input_tokens").to_numpy().astype(np.int64),
                      output_tokens=table.column("output_tokens").to_numpy().astype(np.int64),
                      columns={"client_id": table.column("client_id").to_numpy().astype(np.int64)}, start=0.0,
                      resolution=0.0, report=ReadReport("synthetic", "trace", n, n), duration=duration)


@pytest.fixture(scope="module")
def known():
    pool = known_pool()
    # the law fit alone (modulation off: its base CV is not the window's; see test_plain_log_stays_plain)
    # arrival stream 1: whether client 14 (~6 requests a window) reaches 10 requests in some window,
    # and so gets a window-level fit, is a coin flip for any seed (renewal mode, 200 seeds: 42% on
    # stream 1, 46% on stream 2); seed 21 of stream 1 is one that does not
    fits = {mode: fit_pool(as_log(generate_table(pool, None, 3600, seed=21, mode=mode, arrival_stream=1), 3600),
                           "client_id", modulation=False) for mode in ("servegen", "renewal")}
    return pool, fits


def test_plain_log_stays_plain():
    """A log made by plain windows (servegen mode) keeps plain windows: the modulation fit tries
    the clients with 500+ requests and modulates none (their plain error is within the noise)."""
    pool = known_pool()
    fit = fit_pool(as_log(generate_table(pool, None, 3600, seed=21), 3600), "client_id")
    assert len(fit.modulation) == 3 and not any(r["modulated"] for r in fit.modulation)
    assert fit.pool.mod_sigma is None and fit.summary()["modulated_clients"] == 0


def test_round_trip_rates(known):
    pool, fits = known
    fitted = fits["servegen"].pool
    assert np.array_equal(fitted.client_ids, pool.client_ids)
    # servegen mode makes exactly ceil(r·L) − 1 requests, and the fit's rate is count / L
    want = np.maximum(np.ceil(pool.rate * 600) - 1, 0) / 600
    assert np.allclose(fitted.rate, want, rtol=0, atol=1e-12)
    big = pool.rate > 0.5
    assert np.allclose(fitted.rate[big], pool.rate[big], rtol=0.01)
    # renewal mode: a window's count has sd ~ cv·sqrt(r·L); allow 4 sd per window, 3% in all
    r = fits["renewal"].pool.rate
    sd = pool.cv * np.sqrt(pool.rate * 600) / (pool.rate * 600).clip(1)
    assert np.all(np.abs(r[big] / pool.rate[big] - 1) < 4 * sd[big])
    assert abs(r[big].sum() / pool.rate[big].sum() - 1) < 0.03


@pytest.mark.parametrize("mode", ["servegen", "renewal"])
def test_round_trip_cv_and_law(known, mode):
    pool, fits = known
    fit = fits[mode]
    own = fit.level == LEVEL_WINDOW
    assert np.array_equal(own, pool.rate > 0.5)
    for c, (law, shape, _) in enumerate(list(CLIENTS.values())[:3]):
        windows = own[c]
        cv = fit.pool.cv[c, windows]
        true_cv = L.law_cv(np.array([law]), np.array([shape]))[0]
        # each window's CV within 20%; the median within 8% (a CV of heavy-tailed IATs is noisy)
        assert np.all(np.abs(cv / true_cv - 1) < 0.20), (c, cv, true_cv)
        assert abs(np.median(cv) / true_cv - 1) < 0.08
        laws = fit.pool.law[c, windows]
        if law == LAW_EXPONENTIAL:
            # an exponential sample may be called a Gamma / Weibull of shape ~1: the same law
            assert np.all((laws == LAW_EXPONENTIAL) | (np.abs(fit.pool.shape[c, windows] - 1) < 0.15))
        else:
            assert np.count_nonzero(laws == law) >= 4, (c, laws)  # the true law in most windows
        assert np.all(fit.ks[c, windows] < 0.06)


def test_sparse_windows_borrow_and_idle_stays_idle(known):
    pool, fits = known
    fit = fits["servegen"]
    sparse = (fit.count > 0) & (fit.count < 10)
    assert sparse[3].any()
    assert np.all(np.isin(fit.level[sparse], (LEVEL_CLIENT, LEVEL_LOG)))
    assert np.all(np.isnan(fit.ks[sparse]))
    assert np.all(fit.pool.rate[sparse] == fit.count[sparse] / 600)
    assert fit.level[2, 3] == LEVEL_IDLE and fit.pool.law[2, 3] == LAW_IDLE and fit.pool.rate[2, 3] == 0


def test_round_trip_lengths(known):
    pool, fits = known
    fit = fits["servegen"].pool
    for c, cid in enumerate(pool.client_ids):
        for f in range(2):
            v, p = fit.dists.get(int(fit.dist_id[c, 0, f]))
            tv, tp = LENGTHS[int(cid)]
            grid = np.union1d(v, tv)
            got = np.cumsum(p)[np.searchsorted(v, grid, side="right") - 1]
            want = (np.cumsum(tp) / np.sum(tp))[np.searchsorted(tv, grid, side="right") - 1]
            # empirical CDF of >= 20 draws (the sparse client: one value); 300-point law compressed
            # to 256 points: KS under 0.08 for ~5,000 draws, exact for point masses
            assert np.max(np.abs(got - want)) < 0.08, (cid, f)
            assert np.all(np.isin(v, tv))


def test_fitted_pool_saves_and_generates(known, tmp_path):
    _, fits = known
    fit = fits["servegen"]
    path = save_pool(fit.pool, tmp_path / "fit.parquet")
    again = open_pool(path)
    assert np.array_equal(again.rate, fit.pool.rate) and np.array_equal(again.law, fit.pool.law)
    t = generate_table(again, None, again.duration, seed=1)
    assert abs(t.num_rows - fit.count.sum()) <= np.count_nonzero(fit.count)  # ServeGen's −1 per window


def test_shape_rules():
    rng = np.random.default_rng(5)
    t = np.cumsum(rng.weibull(0.5, 4000))
    t *= 1190.0 / t[-1]
    log = RequestLog(t, np.ones(len(t), np.int64), np.ones(len(t), np.int64), {}, 0.0, 0.0, ReadReport("w", "trace"))
    mom = fit_pool(log)
    mle = fit_pool(log, shape_rule="mle")
    assert np.all(mom.pool.law == LAW_WEIBULL) and np.all(mle.pool.law == LAW_WEIBULL)
    # moments: the stored shape has the window's empirical CV; mle: cv is the law's own CV
    assert np.allclose(L.law_cv(mom.pool.law, mom.pool.shape), mom.pool.cv, rtol=1e-6)
    assert np.allclose(L.law_cv(mle.pool.law, mle.pool.shape), mle.pool.cv, rtol=1e-12)
    assert np.all(np.abs(mle.pool.shape - 0.5) < 0.05)


def test_offset_log_and_truncated_last_window():
    t = np.array([0.0, 1.0, 2.5, 700.0, 1250.2])
    log = RequestLog(t, np.arange(5), np.arange(5), {}, 1_700_000_000.4, 1e-3, ReadReport("x", "azure", 5, 5))
    fit = fit_pool(log, window=300, length_window=600, min_length_samples=1)
    p = fit.pool
    assert p.origin == 1_700_000_000 and p.window_size == 300 and p.length_window_size == 600
    assert p.duration == 1251 and list(p.window_len) == [300, 300, 300, 300, 51]
    assert list(fit.count[0]) == [3, 0, 1, 0, 1]
    assert p.rate[0, 4] == pytest.approx(1 / 51)
    assert list(p.length_index) == [0, 0, 1, 1, 2] and p.dist_id.shape == (1, 3, 2)
    v, _ = p.dists.get(int(p.dist_id[0, 0, 0]))
    assert list(v) == [0, 1, 2]  # three samples: own distribution (min_length_samples=1)


def test_length_fallback_and_compaction():
    rng = np.random.default_rng(2)
    n = 5000
    t = np.sort(rng.uniform(0, 3599, n))
    t[0] = 0.0
    inp = rng.integers(1, 100_000, n)
    key = np.where(np.arange(n) < 5, "rare", "busy").astype(object)
    log = RequestLog(t, inp, inp // 7, {"k": key}, 0.0, 0.0, ReadReport("x", "trace", n, n))
    fit = fit_pool(log, "k", length_points=64)
    p = fit.pool
    assert fit.labels == ["busy", "rare"]
    busy, rare = p.dist_id[0, 0, 0], p.dist_id[1, 0, 0]
    v, prob = p.dists.get(int(busy))
    assert len(v) <= 64 and v[0] == inp[5:].min() and v[-1] == inp[5:].max()
    # order statistics: CDF within 1/64 (+ sampling of the grid) of the empirical one
    emp = np.searchsorted(np.sort(inp[5:]), v, side="right") / (n - 5)
    assert np.max(np.abs(np.cumsum(prob) - emp)) < 1.5 / 64
    # "rare" has 5 requests (< 20): it falls back to the whole log in that length window
    v2, _ = p.dists.get(int(rare))
    assert len(v2) == 64 and rare != busy


def test_multi_column_key_and_bad_options(tmp_path):
    from test_sources import BURST_V3

    (tmp_path / "b.csv").write_text(BURST_V3)
    log = read_log(tmp_path / "b.csv", on_error="drop")
    fit = fit_pool(log, "Model,Log Type", min_length_samples=1)
    assert fit.labels == ["ChatGPT | Conversation log", "GPT-4 | API log"]
    assert list(fit.count.sum(axis=1)) == [2, 2] and list(fit.pool.client_ids) == [0, 1]
    with pytest.raises(ValueError, match=r"client key column 'user' is not in .*key columns are \['Session ID'"):
        fit_pool(log, "user")
    for bad, match in (({"window": 0}, "window must be a positive"), ({"length_window": 900}, "multiple of window"),
                       ({"min_requests": 2}, "at least 3"), ({"shape_rule": "x"}, "shape_rule")):
        with pytest.raises(ValueError, match=match):
            fit_pool(log, **bad)
    with pytest.raises(TypeError, match="either options"):
        fit_pool(log, options=FitOptions(), window=300)


def test_suggested_correlation():
    assert suggested_correlation(0.0) == "independent" and suggested_correlation(-0.4) == "independent"
    assert suggested_correlation(1.0) == 1.0
    assert suggested_correlation(0.5) == pytest.approx(2 * math.sin(math.pi / 12), abs=0.005)


# --------------------------------------------------------------------------- real logs
@pytest.mark.parametrize("name", ["azure-llm-2023-conv.csv", "mooncake-conversation.jsonl"])
def test_real_log_fidelity(shared_data, tmp_path, name):
    """The issue's targets, default servegen mode: count within 5%, length KS < 0.05, IAT CV within 15%,
    here with ServeGen's plain windows (modulation off; the default fit: tests/test_fidelity_scales.py)."""
    log = read_log(shared_data / name)
    fit = fit_pool(log, modulation=False)
    pool = open_pool(save_pool(fit.pool, tmp_path / "pool.parquet"))
    assert pool.duration == math.ceil(log.span)
    trace = generate_table(pool, None, pool.duration, seed=0)
    f = compare(as_log(trace, pool.duration), log)["fidelity"]
    assert abs(f["requests_error"]) < 0.05
    assert f["ks_input_tokens"] < 0.05 and f["ks_output_tokens"] < 0.05
    assert abs(f["iat_cv_error"]) < 0.15
