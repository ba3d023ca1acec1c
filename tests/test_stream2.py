"""Arrival stream 2's Gamma (kernels/stream2.py): the documented counter use, bit-identical
twins (NumPy, pure Python), and the law: KS against scipy and against NumPy's own Gamma sampler,
moments and tails, all with fixed seeds and the stated tolerances."""
import math

import numba
import numpy as np
import pytest
from scipy import stats

from servegen_fast.kernels import philox as p
from servegen_fast.kernels import stream2 as s2

SEED = 0x5EED_0123_4567
P_MIN = 1e-3
RTOL, ATOL = 2.0**-44, 2.0**-48


@numba.njit(cache=False)
def _gamma2_at(shape, seed, client, window, field, index):
    out = np.empty(index.size)
    for i in range(index.size):
        out[i] = s2.gamma2(shape, seed, client[i], window[i], field, index[i])
    return out


def draw(a, n):
    """n draws of gamma2(a) at indices 0..n-1 of one (client, window) stream."""
    ix = np.arange(n, dtype=np.int64)
    return _gamma2_at(a, SEED, np.full(n, 7, np.int64), np.full(n, 3, np.int64), p.FIELD_IAT, ix)


def random_counters(n, rng_seed):
    rng = np.random.default_rng(rng_seed)
    return tuple(rng.integers(0, 2**32, n, dtype=np.int64) for _ in range(3))


def ks(x, dist, *args):
    return stats.kstest(x, dist, args=args).pvalue


def _gamma2_by_the_docs(a, seed, client, window, field, index):
    """gamma2 as documented: attempt t = the block at slot t; words 0, 1 the normal, 2 the
    acceptance, 3 the boost; u32(w) = (w + 1) 2**-32."""
    base = a + 1.0 if a < 1.0 else a
    d = base - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    for t in range(1000):
        w = [int(x) for x in p.philox_block(seed, client, window, field, index, t)]
        u = [(x + 1) / 2.0 ** 32 for x in w]
        z = math.sqrt(-2.0 * math.log(u[0])) * math.cos(2.0 * math.pi * u[1])
        v = 1.0 + c * z
        if v <= 0.0:
            continue
        v = v * v * v
        if u[2] < 1.0 - 0.0331 * (z * z) * (z * z) or math.log(u[2]) < 0.5 * z * z + d * (1.0 - v + math.log(v)):
            return d * v * (u[3] ** (1.0 / a) if a < 1.0 else 1.0)
    raise AssertionError("no acceptance")


@pytest.mark.parametrize("a", [0.05, 0.3, 1.0, 4.0])
def test_gamma2_counter_usage_matches_docs(a):
    for j in range(300):
        got = s2.gamma2(a, SEED, 1, 2, p.FIELD_IAT, j)
        assert got == pytest.approx(_gamma2_by_the_docs(a, SEED, 1, 2, p.FIELD_IAT, j), rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("a", [0.02, 0.3, 0.999, 1.0, 4.0, 50.0])
def test_gamma2_numpy_twin_and_pure_python_are_bit_identical(a):
    cl, wi, ix = random_counters(50_000, rng_seed=21)
    x = _gamma2_at(a, SEED, cl, wi, p.FIELD_IAT, ix)
    y = s2.gamma2_np(a, SEED, cl, wi, p.FIELD_IAT, ix)
    assert np.all(np.isfinite(x)) and np.all(x >= 0.0)
    np.testing.assert_array_equal(x.view(np.uint64), y.view(np.uint64))
    for j in range(20):
        assert s2.PY.gamma2(a, SEED, 5, 6, p.FIELD_IAT, j) == s2.gamma2(a, SEED, 5, 6, p.FIELD_IAT, j)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_gamma2_invalid_shape_is_nan(bad):
    assert math.isnan(s2.gamma2(bad, SEED, 0, 0, 0, 0))
    assert np.isnan(s2.gamma2_np(np.array([bad, 2.0]), SEED, 0, 0, 0, 0)[0])


# shapes of the pools' Gamma windows (cv 0.1 .. 20) and of the renewal residual (k + 1)
@pytest.mark.parametrize("a", [0.0025, 0.05, 0.3, 0.74, 1.0, 1.74, 4.0, 100.0])
def test_gamma2_ks_and_moments(a):
    """KS against scipy's Gamma and against a plain NumPy Gamma sample (two-sample, fixed seed),
    p > 1e-3 each; mean and variance within 5 standard errors (tolerances as test_gamma_ks_and_moments)."""
    x = draw(a, 100_000)
    n = x.size
    assert np.all(x >= 0.0) and np.all(np.isfinite(x))  # 0: below float64's range (P = 0.17 at a = 0.0025)
    if a >= 0.01:  # below, a sixth of the mass underflows to 0 (NumPy's sample too)
        assert ks(x, "gamma", a) > P_MIN
    plain = np.random.default_rng(2024).gamma(a, size=n)
    assert stats.ks_2samp(x, plain).pvalue > P_MIN
    assert abs(x.mean() - a) < 5 * math.sqrt(a / n)
    assert abs(x.var() - a) < 5 * math.sqrt((2 * a * a + 6 * a) / n)


def test_gamma2_tails_and_independence_of_neighbours():
    """Shape 0.3 (a bursty window): the tails (the 32-bit normal and boost uniforms) hold their
    mass: the fraction below scipy's q-quantile within 5 binomial standard errors of q, for
    q in 1e-4 .. 1 - 1e-4; consecutive draws uncorrelated (5 standard errors)."""
    a = 0.3
    x = draw(a, 200_000)
    for q in (1e-4, 1e-3, 0.01, 0.99, 0.999, 1 - 1e-4):
        frac = np.mean(x < stats.gamma.ppf(q, a))
        assert abs(frac - q) < 5 * math.sqrt(q * (1 - q) / x.size), q
    r = np.corrcoef(np.log(x[:-1]), np.log(x[1:]))[0, 1]
    assert abs(r) < 5 / math.sqrt(x.size)
