"""Intra-window modulation (kernels/modulation.py): one warp on every backend, counts and order
kept, sigma 0 is ServeGen's plain window, and the variance it adds matches the model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from servegen_fast.kernels import modulation as M
from servegen_fast.kernels import reference as R
from servegen_fast.kernels.codes import LAW_GAMMA, MODE_SERVEGEN
from servegen_fast.sample.generate import generate_table


def _units(n_units=24, seed=3):
    rng = np.random.default_rng(seed)
    client = rng.integers(0, 50, n_units).astype(np.uint32)
    window = np.arange(n_units, dtype=np.uint32)
    start = (np.arange(n_units) * 600.0).astype(np.float64)
    length = np.where(np.arange(n_units) % 5 == 4, 377.0, 600.0)  # some truncated windows
    law = np.full(n_units, LAW_GAMMA, np.int64)
    k = rng.uniform(0.3, 3.0, n_units)
    counts = rng.integers(0, 400, n_units)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    sigma = np.where(np.arange(n_units) % 3 == 0, 0.0, rng.uniform(0.1, 1.5, n_units))
    tau = rng.choice([1.0, 7.5, 60.0, 1000.0], n_units)  # 1000 s: one segment (the identity)
    t = np.empty(offsets[-1])
    R.fill_arrivals(MODE_SERVEGEN, np.uint64(9), client, window, start, length, law, k, np.ones(n_units), offsets, t)
    return client, window, start, length, sigma, tau, offsets, t


def _warp(fn, case):
    client, window, start, length, sigma, tau, offsets, t = case
    out = t.copy()
    fn(np.uint64(9), client, window, start, length, sigma, tau, offsets, out)
    return out


def test_cpu_equals_reference_and_keeps_counts_and_order():
    case = _units()
    client, window, start, length, sigma, tau, offsets, t = case
    ref = _warp(M.warp_arrivals_np, case)
    cpu = _warp(M.warp_arrivals, case)
    assert np.array_equal(ref, cpu)  # bit for bit
    for u in range(len(sigma)):
        lo, hi = offsets[u], offsets[u + 1]
        seg = ref[lo:hi]
        assert np.all(np.diff(seg) >= 0) and np.all(seg >= start[u]) and np.all(seg < start[u] + length[u])
        if sigma[u] == 0 or tau[u] >= length[u]:  # plain window / one segment: untouched (up to rounding)
            np.testing.assert_allclose(seg, t[lo:hi], rtol=0, atol=1e-9 * (start[u] + length[u]))
    moved = sigma > 0
    moved &= tau < length
    assert any(not np.allclose(ref[offsets[u]:offsets[u + 1]], t[offsets[u]:offsets[u + 1]]) for u in
               np.flatnonzero(moved) if offsets[u + 1] > offsets[u])


def modulated_pool(pool, sigma=0.6, tau=7.0):
    shape = pool.rate.shape
    return pool.replace(mod_sigma=np.where(np.arange(shape[1]) % 2 == 0, sigma, 0.0)[None, :].repeat(shape[0], 0),
                        mod_tau=np.full(shape, tau))


@pytest.mark.parametrize("mode", ["servegen", "renewal", "poisson"])
def test_modulated_pool_same_trace_on_numpy_and_cpu(mode):
    from test_kernels_cuda import synth_pool

    from servegen_fast.sample.generate import generate_table

    plain = synth_pool(np.full((3, 4), 3.0))
    pool = modulated_pool(plain)
    a, b = (generate_table(pool, mode=mode, seed=4, backend=be) for be in ("numpy", "cpu"))
    assert a.num_rows > 300 and a.equals(b)
    p = generate_table(plain, mode=mode, seed=4)
    assert p.num_rows == a.num_rows  # the warp keeps every unit's count
    ts_p, ts_a = p.column("timestamp").to_numpy(), a.column("timestamp").to_numpy()
    assert not np.array_equal(ts_p, ts_a)
    # windows with sigma 0 (odd windows) are ServeGen's plain windows, exactly
    odd = (ts_p // 60).astype(int) % 2 == 1
    assert np.array_equal(ts_p[odd], ts_a[(ts_a // 60).astype(int) % 2 == 1])


def test_warp_adds_the_modelled_dispersion():
    """A Poisson window warped by iid log-normal segments: counts per segment are mixed Poisson,
    Var/Mean = 1 + r·tau·Var(w)/E(w)² with E, Var over the normalised weights (sample moments)."""
    n_units, L, tau, sigma, rate = 200, 600.0, 20.0, 0.5, 3.0
    client = np.full(n_units, 7, np.uint32)
    window = np.arange(n_units, dtype=np.uint32)
    start = np.arange(n_units) * L
    length = np.full(n_units, L)
    m = np.full(n_units, int(rate * L) - 1)
    offsets = np.r_[0, np.cumsum(m)].astype(np.int64)
    t = np.empty(offsets[-1])
    law = np.full(n_units, 3, np.int64)  # exponential
    R.fill_arrivals(MODE_SERVEGEN, np.uint64(1), client, window, start, length, law, np.ones(n_units),
                    np.ones(n_units), offsets, t)
    M.warp_arrivals(np.uint64(1), client, window, start, length, np.full(n_units, sigma), np.full(n_units, tau),
                    offsets, t)
    counts = np.bincount((t // tau).astype(np.int64), minlength=int(n_units * L / tau))
    idc = counts.var() / counts.mean()
    v = np.exp(sigma ** 2) - 1.0  # Var(w)/E(w)^2 of a log-normal weight
    expected = 1.0 + rate * tau * v
    # the sum-to-L normalisation and the servegen rescaling take a little variance out
    assert expected * 0.8 < idc < expected * 1.1, (idc, expected)


def test_segment_normals_are_standard():
    from scipy import stats

    z = np.log(M._weights_np(1.0, 5, 11, 13, 4000))
    assert stats.kstest(z, "norm").pvalue > 0.01


@pytest.mark.skipif(__import__("importlib").util.find_spec("numba_cuda") is None, reason="numba-cuda not installed")
def test_cuda_simulator_equals_cpu():
    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {here!r})\n"
            "import numpy as np, test_modulation as T\n"
            "from servegen_fast.kernels import cuda as kc, modulation as M\n"
            "assert kc.SIMULATOR\n"
            "case = T._units(n_units=9)\n"
            "a, b = T._warp(kc.warp_arrivals, case), T._warp(M.warp_arrivals_np, case)\n"
            "assert np.array_equal(a, b), np.abs(a - b).max()\n"
            "import test_kernels_cuda as K\n"
            "from servegen_fast.sample.generate import generate_table\n"
            "pool = T.modulated_pool(K.synth_pool(np.full((3, 4), 3.0)))\n"
            "for mode in ('servegen', 'renewal'):\n"
            "    g, c = (generate_table(pool, mode=mode, seed=2, backend=b) for b in ('cuda', 'cpu'))\n"
            "    assert g.num_rows > 100 and g.equals(c), mode\n"
            "print('ok', len(a))\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", SERVEGEN_FAST_CUDA_TPB="4", SERVEGEN_FAST_CUDA_MAX_BLOCKS="2")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "ok" in p.stdout, p.stdout + p.stderr


def test_fit_modulates_an_on_off_log():
    """A log of on/off traffic (20 s segments, on with probability 0.3, Poisson at 6/s when on):
    the plain windows miss its burstiness beyond the seed-to-seed noise, so the fit modulates the
    client, strongly, and over generation seeds 0-3 the trace's IDC curve (1-300 s) is closer to
    the log's than the plain windows' (mean squared log error; on/off is only roughly a
    log-normal modulation, so the gain is modest: about 0.25 against 0.28)."""
    from test_fit import as_log

    from servegen_fast.characterize.analyze import index_of_dispersion
    from servegen_fast.characterize.fit import fit_pool

    rng = np.random.default_rng(17)
    seg = 20.0
    on = rng.random(int(3600 / seg)) < 0.3
    t = np.sort(np.concatenate([i * seg + rng.random(rng.poisson(6.0 * seg)) * seg for i in np.flatnonzero(on)]))
    n = len(t)
    log = as_log(__import__("pyarrow").table({"timestamp": t, "client_id": np.zeros(n, np.uint32),
                                              "input_tokens": np.full(n, 100, np.uint32),
                                              "output_tokens": np.full(n, 10, np.uint32)}), 3600)
    fit = fit_pool(log)
    row = fit.modulation[0]
    assert row["modulated"] and row["sigma"] >= 0.5, row
    assert row["plain_error"] - row["best_error"] > 4 * row["noise"]
    plain = fit_pool(log, modulation=False)
    scales = (1, 3, 10, 30, 60, 120, 300)
    ref = np.log([index_of_dispersion(t, 3600, s) for s in scales])

    def error(pool):
        out = []
        for seed in range(4):
            g = generate_table(pool, seed=seed).column("timestamp").to_numpy()
            out.append(np.mean((np.log([index_of_dispersion(g, 3600, s) for s in scales]) - ref) ** 2))
        return np.mean(out)

    assert error(fit.pool) < error(plain.pool)
