"""Pass-time spread: each simulated pass with a prefill takes a factor drawn from the profile's
measured quantiles, keyed by (instance, pass). The compiled draw against its Python twin, the
draws' distribution, the fit of the quantiles from recorded passes, and the switch to turn it off."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from numba import njit  # not the package's cached njit: its cache key does not cover simulate/passes.py

from servegen_fast.cli import main
from servegen_fast.replay.plan import make_plan
from servegen_fast.replay.results import read_requests
from servegen_fast.simulate.calibrate import MIN_SPREAD_PASSES, design, pass_spread
from servegen_fast.simulate.cluster import run_plan, simulate_trace
from servegen_fast.simulate.passes import spread_factor
from servegen_fast.simulate.profile import save_profile
from servegen_fast.simulate.reference import spread_factor as spread_factor_py
from test_simulate import COEF, SPREAD, WAKE, profile, trace


@njit
def _draws(coef, i, n):
    out = np.empty(n)
    for k in range(n):
        out[k] = spread_factor(coef, i, k)
    return out


def _cdf(x, q):
    """The piecewise-linear distribution of the quantiles q (at probabilities 0, 1/(n-1), .., 1)."""
    return np.interp(x, q, np.linspace(0.0, 1.0, len(q)))


@pytest.mark.parametrize("seed", [0, 1, 2 ** 53 - 1])
def test_compiled_draw_equals_its_python_twin(seed):
    coef = profile(spread=SPREAD).coef_array(seed)
    for i in (0, 1, 7, 1000):
        d = _draws(coef, i, 500)
        assert np.array_equal(d, [spread_factor_py(coef, i, k) for k in range(500)])
    assert np.all(_draws(profile().coef_array(), 3, 50) == 1.0)  # no spread: every factor 1


def test_draws_follow_the_quantiles():
    coef = profile(spread=SPREAD).coef_array()
    n = 20000
    for i in (0, 5):
        d = np.sort(_draws(coef, i, n))
        # KS distance to the piecewise-linear distribution; 1.63 / sqrt(n) is its 1% critical value
        ecdf = np.arange(1, n + 1) / n
        assert np.max(np.abs(ecdf - _cdf(d, SPREAD))) < 1.63 / np.sqrt(n)
        mean = np.mean((np.array(SPREAD[:-1]) + SPREAD[1:]) / 2)  # the distribution's mean
        assert abs(d.mean() - mean) < 4 * d.std() / np.sqrt(n)
        assert d.min() >= SPREAD[0] and d.max() <= SPREAD[-1]
    a, b = _draws(coef, 0, n), _draws(coef, 1, n)  # instances draw independent streams
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(n)
    c = _draws(profile(spread=SPREAD).coef_array(1), 0, n)  # and so do seeds
    assert abs(np.corrcoef(a, c)[0, 1]) < 4 / np.sqrt(n)
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 4 / np.sqrt(n)  # and passes of one instance too


def _passes(rng, n, noise):
    """Recorded passes ([seconds, P, S, D, K, A]) timed by COEF x noise (prefill passes) or exactly."""
    pre = rng.random(n) < 0.5
    P = np.where(pre, rng.integers(16, 2048, n), 0)
    S = pre.astype(np.int64)
    D = np.where(pre, rng.integers(0, 4, n), rng.integers(1, 40, n))
    K = P + D * rng.integers(50, 3000, n)
    steps = np.column_stack([np.zeros(n), P, S, D, K, P * K]).astype(np.float64)
    coef = np.array([COEF[t] for t in COEF])
    steps[:, 0] = design(steps) @ coef * np.where(pre, noise(n), 1.0)
    return steps, coef


def test_pass_spread_recovers_a_lognormal_spread():
    rng = np.random.default_rng(5)
    sigma = 0.15
    steps, coef = _passes(rng, 8000, lambda n: rng.lognormal(0.0, sigma, n))
    q = np.array(pass_spread(steps, coef))
    assert len(q) == 33 and np.all(np.diff(q) >= 0)
    assert np.mean((q[:-1] + q[1:]) / 2) == pytest.approx(1.0, rel=1e-12)  # scaled to mean 1
    mean = np.exp(sigma ** 2 / 2)  # the lognormal's; the quantiles are divided by it
    p = np.linspace(0, 1, 33)
    for k in (4, 8, 16, 24, 28):  # 12.5%, 25%, 50%, 75%, 87.5%: within 2% of the true quantile
        from scipy.stats import norm

        assert q[k] == pytest.approx(np.exp(sigma * norm.ppf(p[k])) / mean, rel=0.02), k


def test_pass_spread_needs_enough_prefill_passes():
    rng = np.random.default_rng(6)
    steps, coef = _passes(rng, 40, lambda n: rng.lognormal(0.0, 0.1, n))
    steps = steps[np.argsort(steps[:, 1] > 0, kind="stable")][:(steps[:, 1] == 0).sum() + MIN_SPREAD_PASSES - 1]
    assert pass_spread(np.vstack([steps[:1], steps]), coef) == []  # one short of the minimum (first pass dropped)


@pytest.mark.parametrize("inp", [100, 2048, 5000])
def test_single_request_with_spread_is_the_formula_times_its_draws(inp):
    prof = profile(kv_blocks=4096, spread=SPREAD)
    t = pa.table({"timestamp": [2.0], "client_id": pa.array([0], pa.uint32()),
                  "input_tokens": pa.array([inp], pa.uint32()), "output_tokens": pa.array([1], pa.uint32())})
    res = run_plan(make_plan(t), prof, 1)
    coef, T, done, by_hand = prof.coef_array(), prof.max_batch_tokens, 0, WAKE
    for k in range(-(-inp // T)):  # chunk k of instance 0 is its k-th pass with a prefill
        c = min(T, inp - done)
        done += c
        by_hand += prof.step_time(c, 1, 0, done, c * done) * spread_factor_py(coef, 0, k)
    assert res.first_token[0] - 2.0 == pytest.approx(by_hand, rel=1e-12)


def test_spread_keeps_the_mean_prefill_time():
    # lone requests far apart: each prefill's time is the formula times its factor; over many,
    # their total stays the formula's (the quantiles' distribution has mean 1)
    q = list(np.array(SPREAD) / np.mean((np.array(SPREAD[:-1]) + SPREAD[1:]) / 2))
    rng = np.random.default_rng(8)
    n = 4000
    t = pa.table({"timestamp": np.arange(n) * 10.0, "client_id": pa.array(np.zeros(n), pa.uint32()),
                  "input_tokens": pa.array(rng.integers(10, 2000, n), pa.uint32()),
                  "output_tokens": pa.array(np.ones(n), pa.uint32())})
    p = make_plan(t)
    flat = run_plan(p, profile(), 1)
    spread = run_plan(p, profile(spread=q), 1)
    ratio = (spread.first_token - spread.started) / (flat.first_token - flat.started)
    assert ratio.min() >= q[0] * (1 - 1e-12) and ratio.max() <= q[-1] * (1 + 1e-12)
    total = (spread.first_token - spread.released).sum() / (flat.first_token - flat.released).sum()
    assert total == pytest.approx(1.0, abs=0.02)
    assert ratio.std() > 0.1  # it does spread


def test_no_spread_is_the_fitted_model(tmp_path):
    t = trace(n=300)
    a = simulate_trace(t, tmp_path / "a", profile=profile(spread=SPREAD), instances=2, spread=False)
    b = simulate_trace(t, tmp_path / "b", profile=profile(), instances=2)
    c = simulate_trace(t, tmp_path / "c", profile=profile(spread=SPREAD), instances=2)
    assert read_requests(tmp_path / "a").equals(read_requests(tmp_path / "b"))
    assert not read_requests(tmp_path / "a").equals(read_requests(tmp_path / "c"))
    assert not a["engine"]["pass_spread"] and c["engine"]["pass_spread"] and a["latency"] == b["latency"]


def test_seed_changes_the_draws_only(tmp_path):
    t = trace(n=300)
    runs = [simulate_trace(t, tmp_path / f"s{s}", profile=profile(spread=SPREAD), instances=2, seed=s)
            for s in (0, 0, 5)]
    a, b, c = (read_requests(tmp_path / f"s{s}") for s in (0, 0, 5))
    assert a.equals(b) and not a.equals(c)
    assert runs[2]["engine"]["seed"] == 5 and runs[0]["counts"] == runs[2]["counts"]
    flat = [simulate_trace(t, tmp_path / f"f{s}", profile=profile(), instances=2, seed=s) for s in (0, 5)]
    assert read_requests(tmp_path / "f0").equals(read_requests(tmp_path / "f5"))  # no spread: nothing drawn
    assert flat[0]["latency"] == flat[1]["latency"]
    with pytest.raises(ValueError, match="seed of the pass-time draws"):
        simulate_trace(t, tmp_path / "bad", profile=profile(spread=SPREAD), instances=2, seed=-1)


def test_cli_no_spread(tmp_path, capsys):
    path = tmp_path / "t.parquet"
    pq.write_table(trace(n=100, span=10.0), path)
    prof = save_profile(profile(spread=SPREAD), tmp_path / "p.json")
    for flag, expect in (([], True), (["--no-spread"], False)):
        assert main(["simulate", str(path), "--profile", str(prof), "-o", str(tmp_path / f"r{len(flag)}"), "--json",
                     *flag]) == 0
        assert json.loads(capsys.readouterr().out)["engine"]["pass_spread"] is expect
    assert main(["provision", str(path), "--profile", str(prof), "--slo-ttft", "2s", "--json", "--no-spread",
                 "--variants", "realistic"]) == 0
    assert json.loads(capsys.readouterr().out)["pass_spread"] is False
