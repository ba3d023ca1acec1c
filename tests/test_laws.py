"""Inter-arrival law fits over groups (servegen_fast.characterize.laws): MLE shapes against scipy, law choice,
moment shapes, KS distances against scipy.stats.kstest. Fixed seeds; tolerances stated inline."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from servegen_fast.characterize import laws as L
from servegen_fast.model.fields import LAW_EXPONENTIAL, LAW_GAMMA, LAW_WEIBULL


def groups(samples):
    off = np.concatenate([[0], np.cumsum([len(s) for s in samples])])
    return L.Groups(np.concatenate(samples), off)


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(11)
    return [rng.gamma(0.4, 3.0, 4000), rng.gamma(5.0, 0.2, 4000), rng.weibull(0.6, 4000) * 7.0,
            rng.weibull(2.5, 4000), rng.exponential(4.0, 4000)]


def test_mle_shapes_match_scipy(samples):
    f = L.fit_laws(groups(samples))
    for i, s in enumerate(samples):
        k = stats.gamma.fit(s, floc=0)[0]
        c = stats.weibull_min.fit(s, floc=0)[0]
        assert f["gamma_shape"][i] == pytest.approx(k, rel=1e-4)  # both solve the same score equation
        assert f["weibull_shape"][i] == pytest.approx(c, rel=1e-4)
        assert f["cv"][i] == pytest.approx(s.std() / s.mean(), rel=1e-12)


def test_law_choice(samples):
    f = L.fit_laws(groups(samples))
    # clear cases (4,000 draws): the generating family wins; the exponential sample may be taken
    # for a Gamma/Weibull with shape ~1, which is the same law
    assert list(f["law"][:4]) == [LAW_GAMMA, LAW_GAMMA, LAW_WEIBULL, LAW_WEIBULL]
    assert f["law"][4] == LAW_EXPONENTIAL or abs(f["mle_shape"][4] - 1.0) < 0.06


def test_ks_matches_scipy(samples):
    g = groups(samples)
    f = L.fit_laws(g)
    ks = L.ks_distance(g, f["law"], f["mle_shape"])
    for i, s in enumerate(samples):
        z, law, sh = s / s.mean(), f["law"][i], f["mle_shape"][i]
        dist = (stats.gamma(sh, scale=1 / sh) if law == LAW_GAMMA else
                stats.weibull_min(sh, scale=1 / math.gamma(1 + 1 / sh)) if law == LAW_WEIBULL else stats.expon())
        assert ks[i] == pytest.approx(stats.kstest(z, dist.cdf).statistic, abs=1e-9)
        assert ks[i] < 0.03  # the fitted law of its own sample: ~1/sqrt(4000) scale


def test_moment_shapes_reproduce_cv():
    cv = np.array([0.05, 0.3, 1.0, 2.0, 5.0, 30.0])
    for law in (LAW_GAMMA, LAW_WEIBULL):
        codes = np.full(len(cv), law, np.uint8)
        shape = L.moment_shape(codes, cv)
        assert np.allclose(L.law_cv(codes, shape), cv, rtol=1e-8)
    assert L.weibull_shape_for_cv(np.array([1.0]))[0] == pytest.approx(1.0, rel=1e-9)


def test_ties_are_lifted_to_the_floor():
    x = np.array([0.0, 0.0, 1.0, 2.0, 0.5, 3.0])
    f = L.fit_laws(groups([x]), floor=0.01)
    assert np.all(np.isfinite(f["gamma_shape"])) and np.all(np.isfinite(f["weibull_shape"]))
    assert f["cv"][0] == pytest.approx(x.std() / x.mean())  # the CV uses the raw gaps


def test_groups_need_two_samples():
    with pytest.raises(ValueError, match="at least two"):
        L.Groups(np.ones(3), np.array([0, 1, 3]))
