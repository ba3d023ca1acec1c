"""Workload generation (servegen_fast.sample.generate): arrival-count semantics, inter-arrival
statistics, length draws and their dependence, multimodal and reasoning fields, ordering,
empty traces and argument errors.

Statistical checks use fixed seeds and small synthetic pools built directly (`synth_pool`),
so the exact target of each statistic is known; every tolerance is stated where it is used.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import optimize, special, stats

from servegen_fast.model import rates as R
from servegen_fast.model.distributions import DistTableBuilder
from servegen_fast.sample.generate import generate, generate_table
from servegen_fast.model.fields import LAW_EXPONENTIAL, LAW_GAMMA, LAW_IDLE, LAW_WEIBULL, NO_DIST
from servegen_fast.model.pool import ClientPool, regular_grid
from servegen_fast.io.trace import trace_schema

LAWS = {"gamma": LAW_GAMMA, "weibull": LAW_WEIBULL, "exponential": LAW_EXPONENTIAL, "idle": LAW_IDLE}
MODES = ("servegen", "renewal", "poisson")


# --------------------------------------------------------------------------- synthetic pools
def weibull_cv(c: float) -> float:
    """Coefficient of variation of a Weibull law with shape c."""
    return math.sqrt(math.gamma(1 + 2 / c) / math.gamma(1 + 1 / c) ** 2 - 1)


def weibull_shape_for_cv(cv: float) -> float:
    return optimize.brentq(lambda c: weibull_cv(c) - cv, 0.05, 50.0, xtol=1e-12)


def default_dists(category: str) -> dict:
    inp = (np.arange(1, 41) * 25.0, np.linspace(1, 3, 40))
    out = (np.arange(1, 31) * 10.0, np.linspace(3, 1, 30))
    if category == "language":
        return {"input_tokens": inp, "output_tokens": out}
    if category == "reason":
        return {"input_tokens": inp, "output_tokens": out,
                "reason_ratio": (np.linspace(0.05, 1.0, 20), np.ones(20))}
    return {"text_tokens": inp,
            "image_tokens": (np.array([256.0, 576.0, 1024.0]), np.array([0.5, 0.3, 0.2])),
            "image_count": (np.array([0.0, 1.0, 3.0]), np.array([0.2, 0.5, 0.3])),
            "output_tokens": out}


def synth_pool(rate, *, law="gamma", cv=1.0, weibull_shape=1.0, dists=None, category="language",
               window_size=600, length_window_size=21600, client_ids=None) -> ClientPool:
    """A ClientPool built directly from arrays.

    rate: [C, W] requests/s (0 = idle). law: a name or a [C, W] array of names ("gamma",
    "weibull", "exponential"). cv: Gamma CV (shape 1/cv²). weibull_shape: Weibull shape
    (its cv column is set to the law's true CV). dists: {field: (values, probs)} shared by
    every client and length window, or {field: callable(client) -> (values, probs)}.
    """
    rate = np.atleast_2d(np.asarray(rate, dtype=np.float64))
    c, w = rate.shape
    names = np.broadcast_to(np.asarray(law), (c, w))
    code = np.vectorize(LAWS.__getitem__, otypes=[np.uint8])(names)
    code = np.where(rate > 0, code, LAW_IDLE).astype(np.uint8)
    cv = np.broadcast_to(np.asarray(cv, dtype=np.float64), (c, w))
    wsh = np.broadcast_to(np.asarray(weibull_shape, dtype=np.float64), (c, w))
    g, wb, ex = code == LAW_GAMMA, code == LAW_WEIBULL, code == LAW_EXPONENTIAL
    shape = np.where(g, 1.0 / cv ** 2, np.where(wb, wsh, np.where(ex, 1.0, 0.0)))
    cv_col = np.where(g, cv, np.where(wb, np.vectorize(weibull_cv)(wsh), np.where(ex, 1.0, 0.0)))
    mean1 = np.where(wb, np.vectorize(lambda s: math.gamma(1 + 1 / s))(wsh), 1.0)
    safe = np.where(rate > 0, rate, 1.0)
    scale = np.where(g, 1.0 / (safe * np.where(g, shape, 1.0)), 1.0 / (safe * mean1))
    scale = np.where(code == LAW_IDLE, 0.0, scale)
    start, wlen, widx, lidx = regular_grid(w, window_size, length_window_size)
    d = int(lidx[-1]) + 1 if w else 1
    dists = default_dists(category) if dists is None else dists
    fields = tuple(dists)
    b = DistTableBuilder()
    dist_id = np.full((c, d, len(fields)), NO_DIST, np.int32)
    for f, spec in enumerate(dists.values()):
        for ci in range(c):
            vals, probs = spec(ci) if callable(spec) else spec
            dist_id[ci, :, f] = b.add(vals, probs)
    ids = np.arange(c, dtype=np.int64) * 7 + 3 if client_ids is None else np.asarray(client_ids, np.int64)
    return ClientPool(category=category, model="synth", client_ids=ids, window_start=start, window_len=wlen,
                      window_index=widx, length_index=lidx, rate=rate, cv=cv_col, law=code, shape=shape,
                      scale=scale, fields=fields, dist_id=dist_id, dists=b.build(), window_size=window_size,
                      length_window_size=length_window_size)


@pytest.fixture(scope="module")
def real_pools(real_pool):
    return real_pool


# --------------------------------------------------------------------------- helpers
def window_of(table: pa.Table, view: ClientPool) -> np.ndarray:
    """Index (in `view`) of the arrival window holding each row's timestamp."""
    ts = table.column("timestamp").to_numpy()
    return np.searchsorted(view.window_start, ts, side="right") - 1


def client_row(table: pa.Table, pool: ClientPool) -> np.ndarray:
    cid = table.column("client_id").to_numpy().astype(np.int64)
    order = np.argsort(pool.client_ids)
    pos = np.searchsorted(pool.client_ids[order], cid)
    assert np.array_equal(pool.client_ids[order][pos], cid)
    return order[pos]


def within_window_iats(table: pa.Table, view: ClientPool) -> tuple[np.ndarray, np.ndarray]:
    """Gaps between consecutive arrivals of the same client in the same window (and the window)."""
    ts = table.column("timestamp").to_numpy()
    key = client_row(table, view) * (view.n_windows + 1) + window_of(table, view)
    order = np.lexsort((ts, key))
    ts, key = ts[order], key[order]
    same = key[1:] == key[:-1]
    return np.diff(ts)[same], (key[1:] % (view.n_windows + 1))[same]


def chi2_pvalue(sample: np.ndarray, values: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Chi-squared goodness of fit of `sample` to the pmf (values, probs); adjacent support
    points are merged until every bin expects at least `min_expected` draws."""
    values = np.asarray(values, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64) / np.sum(probs)
    assert np.isin(sample, values).all(), "draws outside the distribution's support"
    counts = np.bincount(np.searchsorted(values, sample), minlength=len(values)).astype(np.float64)
    expected = probs * len(sample)
    obs_bins, exp_bins, o, e = [], [], 0.0, 0.0
    for oi, ei in zip(counts, expected):
        o, e = o + oi, e + ei
        if e >= min_expected:
            obs_bins.append(o)
            exp_bins.append(e)
            o, e = 0.0, 0.0
    if e > 0 and exp_bins:  # remainder joins the last bin
        obs_bins[-1] += o
        exp_bins[-1] += e
    assert len(exp_bins) >= 2, "too few draws for a chi-squared test"
    return float(stats.chisquare(obs_bins, exp_bins).pvalue)


def normal_scores(x: np.ndarray) -> np.ndarray:
    return stats.norm.ppf(stats.rankdata(x) / (len(x) + 1))


# --------------------------------------------------------------------------- servegen-mode counts
def expected_servegen_counts(pool: ClientPool, start: int, duration: int, aggregate=None) -> np.ndarray:
    """[C, W'] max(ceil(r·L) − 1, 0) over the windows of [start, start + duration), computed
    from the source pool: r is the client's rate, or `aggregate` split in proportion to rates."""
    ends = pool.window_start + pool.window_len
    keep = (np.minimum(ends, start + duration) > np.maximum(pool.window_start, start))
    length = (np.minimum(ends, start + duration) - np.maximum(pool.window_start, start))[keep].astype(np.float64)
    act = pool.active[:, keep]
    rate = np.where(act, pool.rate[:, keep], 0.0)
    if aggregate is not None:
        total = rate.sum(axis=0)
        rate = np.where(total > 0, aggregate * rate / np.where(total > 0, total, 1.0), 0.0)
        x = rate * length
        near = np.abs(x - np.round(x)) < 1e-6 * np.maximum(x, 1.0)
        assert not near[act].any(), "test setup: r·L too close to an integer to compare ceil() exactly"
    return np.maximum(np.ceil(rate * length) - 1, 0).astype(np.int64)


def observed_counts(table: pa.Table, pool: ClientPool, start: int, duration: int) -> np.ndarray:
    view = pool.span(start, start + duration)
    # the view drops clients without activity; count against the source pool's client rows
    rows = client_row(table, pool)
    win = window_of(table, view)
    out = np.zeros((pool.n_clients, view.n_windows), np.int64)
    np.add.at(out, (rows, win), 1)
    return out


def toy_count_pool() -> ClientPool:
    rate = np.array([[1.37, 0.0, 2.113, 0.41],
                     [0.0, 0.0, 0.0, 0.0],
                     [3.3333, 0.0007, 0.0, 5.071],
                     [0.0011, 0.25, 1.9, 0.0]])
    law = [["gamma", "weibull", "gamma", "exponential"]] * 4
    return synth_pool(rate, law=law, cv=[[1.5], [1.0], [0.7], [3.0]], weibull_shape=0.8)


@pytest.mark.parametrize("start,duration", [(0, 2400), (250, 1500), (1111, 1289)])
def test_servegen_counts_native_rates(start, duration):
    pool = toy_count_pool()
    want = expected_servegen_counts(pool, start, duration)
    t = generate_table(pool, None, duration, start=start, seed=5)
    assert np.array_equal(observed_counts(t, pool, start, duration), want)


@pytest.mark.parametrize("aggregate", [7.123, 0.0321])
@pytest.mark.parametrize("start,duration", [(0, 2400), (317, 1700)])
def test_servegen_counts_constant_aggregate(start, duration, aggregate):
    pool = toy_count_pool()
    want = expected_servegen_counts(pool, start, duration, aggregate)
    t = generate_table(pool, aggregate, duration, start=start, seed=6)
    assert np.array_equal(observed_counts(t, pool, start, duration), want)
    # windows where no client is active produce nothing whatever the target
    assert want.sum() == t.num_rows


def test_servegen_counts_real_pool_native_rates(real_pools):
    pool = real_pools("language/m-small")
    start, duration = 36000 + 420, 780  # a truncated window (180 s) and a full one
    want = expected_servegen_counts(pool, start, duration)
    t = generate_table(pool, None, duration, start=start, seed=1)
    assert t.num_rows > 100_000
    assert np.array_equal(observed_counts(t, pool, start, duration), want)


def test_servegen_counts_real_pool_constant_aggregate(real_pools):
    pool = real_pools("reason/deepseek-r1")
    start, duration, agg = 3 * 3600 + 123, 1800, 13.37
    want = expected_servegen_counts(pool, start, duration, agg)
    t = generate_table(pool, agg, duration, start=start, seed=2)
    assert np.array_equal(observed_counts(t, pool, start, duration), want)


# --------------------------------------------------------------------------- inter-arrival statistics
CV_CASES = [("gamma", 0.5), ("gamma", 2.0), ("weibull", 1.5)]


@pytest.mark.parametrize("mode", ["servegen", "renewal"])
@pytest.mark.parametrize("law,cv", CV_CASES)
def test_within_window_iat_cv(law, cv, mode):
    w = 10
    shape = weibull_shape_for_cv(cv) if law == "weibull" else 1.0
    pool = synth_pool(np.full((1, w), 10.0), law=law, cv=cv, weibull_shape=shape)
    t = generate_table(pool, None, seed=11, mode=mode)
    iat, _ = within_window_iats(t, pool)
    assert len(iat) > 50_000
    got = iat.std() / iat.mean()
    # pooled within-window IAT CV within 10% (relative) of the law's CV; sampling error of
    # the CV with ~60k gaps is about 1% (Gamma k = 0.25 has the heaviest tail here)
    assert got == pytest.approx(cv, rel=0.10), (law, cv, mode, got)
    if mode == "renewal":
        # renewal gaps have mean exactly 1/rate: within 2% (sampling error <= 0.8%)
        assert iat.mean() == pytest.approx(0.1, rel=0.02)


def renewal_pool(n_windows: int, rate: float) -> ClientPool:
    """Three clients of one rate: Gamma cv 2, Weibull cv 1.5, Exponential."""
    law = np.array([["gamma"], ["weibull"], ["exponential"]])
    return synth_pool(np.full((3, n_windows), rate), law=law, cv=2.0, weibull_shape=weibull_shape_for_cv(1.5))


@pytest.mark.parametrize("mode", ["renewal", "poisson"])
def test_renewal_mean_rate_low_rate_many_windows(mode):
    # 30 expected arrivals per window: a process not started in equilibrium would be off by
    # (cv² − 1)/2 = 1.5 arrivals per window (+5%) for Gamma cv 2, or +1 (3.3%) if it
    # started with an arrival at the window start.
    w, rate = 2000, 0.05
    pool = renewal_pool(w, rate)
    t = generate_table(pool, None, seed=21, mode=mode)
    counts = observed_counts(t, pool, 0, pool.duration)
    per_client = counts.sum(axis=1) / (w * 600.0)
    # ±3% of the target; SE: Poisson 0.4%, Gamma cv 2 about 0.8%, Weibull cv 1.5 about 0.6%
    np.testing.assert_allclose(per_client, rate, rtol=0.03)
    if mode == "poisson":
        # Poisson counts: dispersion index 1 ± 0.15 (SE about 0.03 with 2000 windows)
        for c in range(3):
            assert counts[c].var(ddof=1) / counts[c].mean() == pytest.approx(1.0, abs=0.15)


def first_arrival_offsets(table: pa.Table, pool: ClientPool) -> tuple[np.ndarray, np.ndarray]:
    """(client row, time from the window start to the first arrival) per (client, window) with arrivals."""
    ts = table.column("timestamp").to_numpy()
    win = window_of(table, pool)
    key = client_row(table, pool) * pool.n_windows + win
    order = np.lexsort((ts, key))
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    return key[first] // pool.n_windows, ts[first] - pool.window_start[win[first]]


def test_renewal_first_arrival_is_equilibrium():
    # a stationary renewal process seen from a fixed time: the first arrival comes after the
    # forward-recurrence time, F_e(x) = (1/mean) ∫0^x S(y) dy (conditioned on x < 600 s here)
    w, rate = 2000, 0.05
    pool = renewal_pool(w, rate)
    t = generate_table(pool, None, seed=21, mode="renewal")
    rows, first = first_arrival_offsets(t, pool)
    k, theta = 0.25, 1.0 / (rate * 0.25)  # Gamma cv 2
    c = weibull_shape_for_cv(1.5)
    lam = 1.0 / (rate * math.gamma(1 + 1 / c))

    def gamma_eq(x):
        return x * stats.gamma.sf(x, k, scale=theta) / (k * theta) + stats.gamma.cdf(x, k + 1, scale=theta)

    cdfs = [gamma_eq, lambda x: special.gammainc(1 / c, (np.asarray(x) / lam) ** c),
            lambda x: 1 - np.exp(-rate * np.asarray(x))]
    for r, cdf in enumerate(cdfs):
        x = first[rows == r]
        assert len(x) > 1500
        # KS against the truncated equilibrium law: p > 0.001
        assert stats.kstest(x, lambda v: cdf(v) / cdf(600.0)).pvalue > 1e-3, r
        # an ordinary renewal start (a full interval, mean 20 s) would differ grossly for r = 0:
        # the equilibrium mean for Gamma cv 2 is mean·(1 + cv²)/2 = 50 s (before truncation)


@pytest.mark.parametrize("mode", ["renewal", "poisson"])
def test_renewal_mean_rate_split_of_constant_aggregate(mode):
    # two clients with rates 1:2, aggregate 30 req/s -> targets 10 and 20 req/s
    w = 20
    pool = synth_pool(np.array([[0.5] * w, [1.0] * w]), law="gamma", cv=np.array([[1.8], [0.6]]))
    t = generate_table(pool, 30.0, seed=22, mode=mode)
    counts = observed_counts(t, pool, 0, pool.duration).sum(axis=1) / (w * 600.0)
    # ±3% (SE about 0.5% for cv 1.8 at 120k expected arrivals)
    np.testing.assert_allclose(counts, [10.0, 20.0], rtol=0.03)


def test_poisson_iats_are_exponential():
    w, rate = 10, 8.0
    pool = synth_pool(np.full((1, w), rate), law="gamma", cv=3.0)  # the law is ignored in poisson mode
    t = generate_table(pool, None, seed=31, mode="poisson")
    iat, _ = within_window_iats(t, pool)
    assert len(iat) > 40_000
    # CV 1 ± 0.05 (SE about 0.005)
    assert iat.std() / iat.mean() == pytest.approx(1.0, abs=0.05)
    # KS against Exp(rate): p > 0.001
    assert stats.kstest(iat * rate, "expon").pvalue > 1e-3


def test_renewal_gamma_cv():
    pool = synth_pool(np.full((1, 10), 10.0), law="gamma", cv=1.7)
    t = generate_table(pool, None, seed=32, mode="renewal")
    iat, _ = within_window_iats(t, pool)
    # CV within 5% (SE about 0.8% with 60k gaps)
    assert iat.std() / iat.mean() == pytest.approx(1.7, rel=0.05)
    # the gaps are Gamma(1/cv², scale cv²/rate): KS p > 0.001
    k = 1 / 1.7 ** 2
    assert stats.kstest(iat, "gamma", args=(k, 0, 1 / (10.0 * k))).pvalue > 1e-3


def test_renewal_weibull_iats_follow_the_law():
    c = weibull_shape_for_cv(1.5)
    pool = synth_pool(np.full((1, 10), 10.0), law="weibull", weibull_shape=c)
    t = generate_table(pool, None, seed=33, mode="renewal")
    iat, _ = within_window_iats(t, pool)
    scale = 1.0 / (10.0 * math.gamma(1 + 1 / c))
    # KS against Weibull(c, scale) with mean 1/rate: p > 0.001
    assert stats.kstest(iat, "weibull_min", args=(c, 0, scale)).pvalue > 1e-3


# --------------------------------------------------------------------------- length draws
def single_window_pool(rate: float, dists: dict, category: str = "language") -> ClientPool:
    return synth_pool(np.full((1, 1), rate), law="gamma", cv=1.0, dists=dists, category=category)


@pytest.mark.parametrize("correlation", ["comonotone", "independent", 0.6])
def test_length_draws_match_the_pmf(correlation):
    pool = single_window_pool(20.0, default_dists("language"))
    t = generate_table(pool, None, seed=41, correlation=correlation)
    assert t.num_rows == 11_999
    for field in ("input_tokens", "output_tokens"):
        vals, probs = default_dists("language")[field]
        # chi-squared goodness of fit, bins with >= 5 expected draws: p > 0.001
        assert chi2_pvalue(t.column(field).to_numpy(), vals, probs) > 1e-3, (field, correlation)


@pytest.mark.parametrize("correlation", ["comonotone", "independent"])
def test_length_draws_match_the_pmf_real_client(real_pools, correlation):
    pool = real_pools("language/m-small")
    w = 60
    c = int(np.argmax(pool.rate[:, w]))
    one = pool.select_clients([c])
    t = generate_table(one, None, 600, start=w * 600, seed=42, correlation=correlation)
    assert t.num_rows > 10_000
    for field in ("input_tokens", "output_tokens"):
        vals, probs = pool.dists.get(int(pool.window_dist_id(field)[c, w]))
        # chi-squared, adjacent support points merged to >= 5 expected draws: p > 0.001
        assert chi2_pvalue(t.column(field).to_numpy(), vals, probs) > 1e-3, field


def fine_dists() -> dict:
    """Many support points: ranks are nearly continuous."""
    x = np.arange(1, 2001, dtype=np.float64)
    y = np.arange(1, 1501, dtype=np.float64)
    return {"input_tokens": (x, np.ones_like(x)), "output_tokens": (y, np.exp(-y / 400.0))}


def test_comonotone_ranks_perfectly_concordant():
    pool = single_window_pool(40.0, fine_dists())
    t = generate_table(pool, None, seed=51, correlation="comonotone")
    a = t.column("input_tokens").to_numpy()
    b = t.column("output_tokens").to_numpy()
    # no discordant pair: sorted by (input, output), output never decreases
    order = np.lexsort((b, a))
    assert (np.diff(b[order].astype(np.int64)) >= 0).all()
    assert stats.spearmanr(a, b).statistic > 0.999  # == 1 up to ties


def test_comonotone_real_pool_concordant_per_client_window(real_pools):
    pool = real_pools("language/m-small")
    start = 60 * 600
    t = generate_table(pool, 50.0, 1800, start=start, seed=52)
    view = pool.span(start, start + 1800)
    key = client_row(t, pool) * 10 + view.length_index[window_of(t, view)]
    a = t.column("input_tokens").to_numpy().astype(np.int64)
    b = t.column("output_tokens").to_numpy().astype(np.int64)
    order = np.lexsort((b, a, key))
    same = key[order][1:] == key[order][:-1]
    assert (np.diff(b[order])[same] >= 0).all()


def test_independent_lengths_uncorrelated():
    pool = single_window_pool(40.0, fine_dists())
    t = generate_table(pool, None, seed=53, correlation="independent")
    assert t.num_rows >= 20_000
    # |Spearman| < 0.03 (SE 1/sqrt(n) ≈ 0.0065)
    rho = stats.spearmanr(t.column("input_tokens").to_numpy(), t.column("output_tokens").to_numpy()).statistic
    assert abs(rho) < 0.03


@pytest.mark.parametrize("rho", [0.6, 0.25])
def test_copula_normal_scores_correlation(rho):
    pool = single_window_pool(40.0, fine_dists())
    t = generate_table(pool, None, seed=54, correlation=rho)
    assert t.num_rows >= 20_000
    a = normal_scores(t.column("input_tokens").to_numpy())
    b = normal_scores(t.column("output_tokens").to_numpy())
    # normal-scores correlation within ±0.05 of rho (SE (1 − rho²)/sqrt(n) ≈ 0.005)
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(rho, abs=0.05)


def test_copula_equicorrelation_three_fields():
    x = np.arange(1, 1001, dtype=np.float64)
    dists = {"input_tokens": (x, np.ones_like(x)), "output_tokens": (x, np.sqrt(x)),
             "reason_ratio": (x / 1000.0, np.ones_like(x))}
    pool = single_window_pool(40.0, dists, category="reason")
    t = generate_table(pool, None, seed=55, correlation=0.6, include_reason_ratio=True)
    cols = [normal_scores(t.column(f).to_numpy()) for f in ("input_tokens", "output_tokens", "reason_ratio")]
    corr = np.corrcoef(cols)
    # every pair within ±0.05 of 0.6
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert corr[i, j] == pytest.approx(0.6, abs=0.05), (i, j)


def test_copula_rho_one_is_concordant_and_zero_uncorrelated():
    pool = single_window_pool(40.0, fine_dists())
    t1 = generate_table(pool, None, seed=56, correlation=1.0)
    a, b = (t1.column(f).to_numpy().astype(np.int64) for f in ("input_tokens", "output_tokens"))
    order = np.lexsort((b, a))
    assert (np.diff(b[order]) >= 0).all()
    t0 = generate_table(pool, None, seed=56, correlation=0.0)
    rho = stats.spearmanr(t0.column("input_tokens").to_numpy(), t0.column("output_tokens").to_numpy()).statistic
    assert abs(rho) < 0.03  # SE ≈ 0.0065


# --------------------------------------------------------------------------- multimodal
def list_lengths(col: pa.ChunkedArray) -> np.ndarray:
    return pa.concat_arrays([c.value_lengths() for c in col.chunks]).to_numpy(zero_copy_only=False) \
        if col.num_chunks else np.zeros(0, np.int64)


def list_sums(col: pa.ChunkedArray) -> np.ndarray:
    out = []
    for chunk in col.chunks:
        off = chunk.offsets.to_numpy()
        vals = chunk.values.to_numpy().astype(np.int64)
        csum = np.concatenate(([0], np.cumsum(vals)))
        out.append(csum[off[1:]] - csum[off[:-1]])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def check_multimodal_totals(t: pa.Table) -> None:
    total = t.column("text_tokens").to_numpy().astype(np.int64)
    for item in ("image_tokens", "audio_tokens", "video_tokens"):
        if item in t.column_names:
            total = total + list_sums(t.column(item))
    assert np.array_equal(t.column("input_tokens").to_numpy().astype(np.int64), total)


@pytest.mark.parametrize("correlation", ["comonotone", "independent"])
def test_multimodal_synthetic_counts_and_items(correlation):
    pool = single_window_pool(20.0, default_dists("multimodal"), category="multimodal")
    t = generate_table(pool, None, seed=61, correlation=correlation)
    assert "image_count" not in t.column_names and "text_tokens" in t.column_names
    assert t.schema.field("image_tokens").type == pa.list_(pa.uint32())
    lengths = list_lengths(t.column("image_tokens"))
    assert set(np.unique(lengths)) <= {0, 1, 3}
    # list lengths follow {0: .2, 1: .5, 3: .3}: chi-squared p > 0.001
    assert chi2_pvalue(lengths, [0, 1, 3], [0.2, 0.5, 0.3]) > 1e-3
    # item values follow the image_tokens pmf: chi-squared p > 0.001
    items = pa.concat_arrays([c.values for c in t.column("image_tokens").chunks]).to_numpy()
    assert chi2_pvalue(items, [256, 576, 1024], [0.5, 0.3, 0.2]) > 1e-3
    check_multimodal_totals(t)


def test_multimodal_real_pool(real_pools):
    pool = real_pools("multimodal/mm-image")
    start, duration = 60 * 600, 1200
    t = generate_table(pool, None, duration, start=start, seed=62, mode="renewal")
    assert t.num_rows > 1000
    assert {"image_tokens", "audio_tokens", "video_tokens", "text_tokens"} <= set(t.column_names)
    check_multimodal_totals(t)
    # the busiest client of the first window among those with a spread-out image_count pmf:
    # its list lengths follow that pmf, its items the image_tokens pmf
    view = pool.span(start, start + duration)
    rows, win = client_row(t, pool), window_of(t, view)
    count_ids = pool.window_dist_id("image_count")[:, 60]
    spread = np.array([len(pool.dists.get(int(k))[0]) >= 3 for k in count_ids])
    c = int(np.argmax(np.where(spread & pool.active[:, 60], pool.rate[:, 60], 0.0)))
    sel = (rows == c) & (win == 0)
    assert sel.sum() > 500
    vals, probs = pool.dists.get(int(count_ids[c]))
    lengths = list_lengths(t.column("image_tokens"))
    # chi-squared (merged bins, >= 5 expected): p > 0.001
    assert chi2_pvalue(lengths[sel], vals, probs) > 1e-3
    col = t.column("image_tokens").combine_chunks()
    items = np.concatenate([col[int(i)].values.to_numpy() for i in np.flatnonzero(sel)])
    vals, probs = pool.dists.get(int(pool.window_dist_id("image_tokens")[c, 60]))
    assert chi2_pvalue(items, vals, probs) > 1e-3


# --------------------------------------------------------------------------- reasoning
def test_reasoning_tokens_real_pool(real_pools):
    pool = real_pools("reason/deepseek-r1")
    t = generate_table(pool, None, 1800, start=36000, seed=71, include_reason_ratio=True)
    assert t.num_rows > 1000
    out = t.column("output_tokens").to_numpy().astype(np.float64)
    reason = t.column("reasoning_tokens").to_numpy().astype(np.float64)
    ratio = t.column("reason_ratio").to_numpy()
    assert ((ratio >= 0) & (ratio <= 1)).all()
    assert (reason <= out).all()
    assert np.array_equal(reason, np.floor(ratio * out + 0.5))
    # without the ratio column the other columns are unchanged
    t2 = generate_table(pool, None, 1800, start=36000, seed=71)
    assert "reason_ratio" not in t2.column_names
    assert t2.equals(t.drop_columns(["reason_ratio"]))


def test_reasoning_tokens_synthetic_ratio_one():
    dists = {"input_tokens": ([10.0], [1.0]), "output_tokens": ([7.0, 9.0, 13.0], [1, 1, 1]),
             "reason_ratio": ([0.5, 1.0], [1, 1])}
    pool = single_window_pool(5.0, dists, category="reason")
    t = generate_table(pool, None, seed=72, include_reason_ratio=True, correlation="independent")
    out = t.column("output_tokens").to_numpy().astype(np.int64)
    reason = t.column("reasoning_tokens").to_numpy().astype(np.int64)
    ratio = t.column("reason_ratio").to_numpy()
    assert np.array_equal(reason, np.where(ratio == 1.0, out, (out + 1) // 2))  # 3.5 -> 4, 4.5 -> 5, 6.5 -> 7


# --------------------------------------------------------------------------- ordering and ranges
@pytest.mark.parametrize("mode", MODES)
def test_trace_sorted_in_range_known_clients(mode):
    rate = np.array([[2.0, 0.0, 1.0, 3.0], [0.5, 4.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    pool = synth_pool(rate, law=[["gamma", "weibull", "exponential", "gamma"]] * 3, cv=2.5, weibull_shape=0.6)
    start, duration = 200, 1900
    batches = list(generate(pool, None, duration, start=start, seed=81, mode=mode, chunk_bytes=1))
    assert len(batches) == 4  # one chunk per window with a tiny budget
    t = pa.Table.from_batches(batches)
    ts = t.column("timestamp").to_numpy()
    assert (np.diff(ts) >= 0).all()
    assert ts.min() >= 0 and ts.max() < duration
    assert set(np.unique(t.column("client_id").to_numpy())) <= set(pool.client_ids.tolist())


def test_trace_sorted_real_pool(real_pools):
    pool = real_pools("reason/deepseek-r1")
    for mode in MODES:
        t = generate_table(pool, None, 3000, start=50_000, seed=82, mode=mode, chunk_bytes=1 << 14)
        ts = t.column("timestamp").to_numpy()
        assert (np.diff(ts) >= 0).all() and ts.min() >= 0 and ts.max() < 3000
        assert np.isin(t.column("client_id").to_numpy(), pool.client_ids).all()


def test_rows_follow_the_client_rates_per_window():
    # a client never gets rows in a window where it is idle
    rate = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    pool = synth_pool(rate)
    for mode in MODES:
        t = generate_table(pool, None, seed=83, mode=mode)
        counts = observed_counts(t, pool, 0, pool.duration)
        assert (counts[rate == 0] == 0).all() and (counts[rate > 0] > 0).all()


# --------------------------------------------------------------------------- empty traces
@pytest.mark.parametrize("category", ["language", "multimodal", "reason"])
def test_empty_pool_gives_empty_table(category):
    pool = synth_pool(np.zeros((3, 4)), category=category)
    want = trace_schema(category, pool.fields)
    for mode in MODES:
        t = generate_table(pool, None, seed=1, mode=mode)
        assert t.num_rows == 0 and t.schema.equals(want)
        assert list(generate(pool, None, seed=1, mode=mode)) == []
        t = generate_table(pool, 10.0, seed=1, mode=mode)  # a target cannot create activity
        assert t.num_rows == 0


def test_zero_rate_gives_empty_table():
    pool = synth_pool(np.ones((2, 3)), category="reason")
    for rate in (0, 0.0, R.Constant(0.0), [0.0, 0.0, 0.0], {0: 0.0, 600: 0.0, 1200: 0.0}):
        t = generate_table(pool, rate, seed=1, include_reason_ratio=True)
        assert t.num_rows == 0
        assert t.schema.equals(trace_schema("reason", pool.fields, True))
        assert list(generate(pool, rate)) == []


def test_zero_rate_in_some_windows():
    pool = synth_pool(np.ones((2, 3)))
    t = generate_table(pool, [5.0, 0.0, 5.0], seed=1)
    win = window_of(t, pool)
    assert set(np.unique(win)) == {0, 2}


# --------------------------------------------------------------------------- argument errors
@pytest.fixture(scope="module")
def small_pool():
    return synth_pool(np.ones((2, 3)))


@pytest.mark.parametrize("duration", [0, -600, 10.5, 599.999])
def test_bad_duration(small_pool, duration):
    with pytest.raises(ValueError, match="duration"):
        generate_table(small_pool, None, duration)


def test_bad_mode_backend_correlation_seed(small_pool):
    with pytest.raises(ValueError, match="unknown arrival mode 'gamma'"):
        generate_table(small_pool, None, 600, mode="gamma")
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        generate_table(small_pool, None, 600, backend="gpu")
    for bad in (1.5, -0.1, "foo", float("nan")):
        with pytest.raises(ValueError, match="correlation"):
            generate_table(small_pool, None, 600, correlation=bad)
    for bad in (-1, 2 ** 64, 1.5, "7"):
        with pytest.raises(ValueError, match="seed"):
            generate_table(small_pool, None, 600, seed=bad)
    for bad in (-1, 10.5):
        with pytest.raises(ValueError, match="start must be a non-negative whole number"):
            generate_table(small_pool, None, 600, start=bad)
    assert generate_table(small_pool, None, 600, start=600.0).num_rows > 0
    with pytest.raises(TypeError, match="ClientPool"):
        generate_table("language/m-small", None, 600)


def test_bad_rates(small_pool):
    with pytest.raises(ValueError, match="Rate function timestamps don't match pool timestamps"):
        generate_table(small_pool, {0: 1.0, 600: 2.0}, 1800)
    with pytest.raises(ValueError, match="Rate function timestamps don't match pool timestamps"):
        generate_table(small_pool, {0: 1.0, 601: 2.0, 1200: 3.0}, 1800)
    # keys are relative to the generated span's start
    with pytest.raises(ValueError, match="Rate function timestamps don't match pool timestamps"):
        generate_table(small_pool, {600: 1.0, 1200: 1.0}, 1200, start=600)
    assert generate_table(small_pool, {0: 1.0, 600: 1.0}, 1200, start=600).num_rows > 0
    with pytest.raises(ValueError, match="3 windows"):
        generate_table(small_pool, [1.0, 2.0], 1800)
    with pytest.raises(ValueError, match="3 windows"):
        generate_table(small_pool, np.ones(4), 1800)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="target rate"):
            generate_table(small_pool, bad, 1800)
    with pytest.raises(ValueError, match="target rate at window starting 600 s"):
        generate_table(small_pool, [1.0, -2.0, 1.0], 1800)
    with pytest.raises(TypeError, match="rate function"):
        generate_table(small_pool, object(), 1800)


def test_generate_checks_arguments_when_called(small_pool):
    # errors surface at the call, before any batch is drawn (e.g. before a writer opens a file)
    with pytest.raises(ValueError, match="duration"):
        generate(small_pool, None, -5)
    with pytest.raises(ValueError, match="Rate function timestamps"):
        generate(small_pool, {0: 1.0}, 1800)
    with pytest.raises(ValueError, match="unknown backend"):
        generate(small_pool, None, 600, backend="tpu")


def test_cuda_backend_unavailable(small_pool):
    try:
        from numba import cuda
        have_gpu = cuda.is_available()
    except Exception:  # noqa: BLE001 - numba-cuda missing or broken: no GPU either way
        have_gpu = False
    if have_gpu:
        pytest.skip("a CUDA GPU is available here")
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
        generate_table(small_pool, None, 600, backend="cuda")


def test_asynchronous_backend_gets_next_chunk_before_previous_is_emitted(monkeypatch):
    """With a backend that offers submit_ordered (cuda), chunk k+1 is submitted before chunk k
    is read out and yielded, so device work overlaps the writer; the trace is unchanged."""
    import types

    from servegen_fast.kernels import cpu
    from servegen_fast.sample import backend as B
    from servegen_fast.sample import generate as G

    events = []

    class Job:
        def __init__(self, i, args):
            self.i, self.args = i, args

        def result(self):
            events.append(("result", self.i))
            return B._ordered_rows(cpu, *self.args)

    def submit_ordered(*args):
        i = sum(1 for e in events if e[0] == "submit")
        events.append(("submit", i))
        return Job(i, args)

    fake = types.SimpleNamespace(**{k: getattr(cpu, k) for k in dir(cpu) if not k.startswith("__")},
                                 submit_ordered=submit_ordered)
    monkeypatch.setattr(G, "load_backend", lambda name: B.Backend("fake", fake))
    pool = synth_pool(np.full((3, 6), 0.5))
    kw = dict(seed=5, chunk_bytes=96 * 40)
    got = []
    for batch in G.generate(pool, None, None, **kw):
        events.append(("yield", None))
        got.append(batch)
    submits = [e for e in events if e[0] == "submit"]
    assert len(submits) >= 3
    for i in range(len(submits) - 1):
        assert events.index(("submit", i + 1)) < events.index(("result", i))
    monkeypatch.undo()
    want = generate_table(pool, None, None, **kw)
    assert pa.Table.from_batches(got, schema=want.schema).equals(want)


@pytest.mark.parametrize("x, type", [
    (np.linspace(0, 5, 9), pa.float64()), (np.arange(7, dtype=np.uint32), pa.uint32()),
    (np.arange(20, dtype=np.uint32)[::2], pa.uint32()), (np.arange(5, dtype=np.int64), pa.uint32()),
    (np.arange(4, dtype=np.uint16), pa.uint16()), (np.array([], np.float32), pa.float32()),
], ids=["float64", "uint32", "strided", "int64-to-uint32", "uint16", "empty"])
def test_batch_columns_equal_pyarrows_conversion(x, type):
    """to_batch's view of a column (io/arrow_numpy.to_arrow) equals pyarrow's pa.array."""
    from servegen_fast.io.arrow_numpy import to_arrow

    got, want = to_arrow(x, type), pa.array(x, type)
    assert got.type == want.type and got.null_count == 0 and got.equals(want)


def test_a_generate_process_imports_no_pandas(tmp_path):
    """`servegen-fast generate` from a pool file never imports pandas (pyarrow's NumPy
    conversions import it where it is installed: 0.2-0.3 s of a new process), and the
    kernels' background set-up (sample.backend.preload) leaves the trace as in-process."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    out = tmp_path / "t.parquet"
    code = ("import sys; from servegen_fast.cli import main; "
            f"rc = main(['generate', '--pool', 'builtin', '--duration', '2h', '--seed', '5', '-q', '-o', {str(out)!r}]); "
            "print(rc, 'pandas' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.split() == ["0", "False"]
    from servegen_fast.io.pool_file import open_pool

    want = generate_table(open_pool("builtin"), None, 7200, seed=5)
    got = pq.read_table(out)
    assert got.num_rows == want.num_rows and got.select(want.column_names).equals(want.select(want.column_names))


def test_preload_prepares_only_the_cpu_backend():
    from servegen_fast.sample.backend import preload

    assert preload("numpy") is None and preload("cuda") is None
    thread = preload("cpu")
    thread.join(timeout=120)
    assert not thread.is_alive() and not thread.daemon
