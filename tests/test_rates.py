"""Rate functions (servegen_fast.model.rates): per-window resolution against a pool view, the
accepted forms, round trips through trace metadata, and the split into client targets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from servegen_fast.model import rates as R
from servegen_fast.model.distributions import DistTableBuilder
from servegen_fast.model.fields import LAW_GAMMA, LAW_IDLE
from servegen_fast.model.pool import ClientPool, regular_grid

DAY, WEEK = 86400, 7 * 86400


def make_pool(rate, window_size=600) -> ClientPool:
    """A language pool with the given [C, W] rates (0 = idle) and one length distribution."""
    rate = np.asarray(rate, dtype=np.float64)
    c, w = rate.shape
    law = np.where(rate > 0, LAW_GAMMA, LAW_IDLE).astype(np.uint8)
    b = DistTableBuilder()
    k = b.add([10.0, 20.0], [0.5, 0.5])
    start, wlen, widx, lidx = regular_grid(w, window_size, 21600)
    dist_id = np.full((c, int(lidx[-1]) + 1, 2), k, np.int32)
    ones = np.where(rate > 0, 1.0, 0.0)
    return ClientPool(category="language", model="toy", client_ids=np.arange(c, dtype=np.int64), window_start=start,
                      window_len=wlen, window_index=widx, length_index=lidx, rate=rate, cv=ones, law=law,
                      shape=ones, scale=ones, fields=("input_tokens", "output_tokens"), dist_id=dist_id,
                      dists=b.build(), window_size=window_size)


@pytest.fixture(scope="module")
def pool():
    return make_pool([[1.0, 0.0, 2.0, 3.0, 0.0],
                      [0.5, 0.0, 0.0, 1.0, 0.0],
                      [4.0, 0.0, 2.0, 6.0, 0.0]])  # aggregate [5.5, 0, 4, 10, 0]


AGG = np.array([5.5, 0.0, 4.0, 10.0, 0.0])


# --------------------------------------------------------------------------- the rate functions
def test_constant(pool):
    np.testing.assert_array_equal(R.Constant(7.5).per_window(pool), np.full(5, 7.5))
    assert R.Constant(3).per_window(pool).dtype == np.float64


def test_scaled(pool):
    np.testing.assert_array_equal(R.Scaled(1.0).per_window(pool), AGG)  # factor 1 = native aggregate
    np.testing.assert_array_equal(R.Scaled().per_window(pool), AGG)
    np.testing.assert_allclose(R.Scaled(2.5).per_window(pool), 2.5 * AGG)


def test_scaled_ignores_filtered_windows(pool):
    view = pool.filter(lambda p: np.array([True, True, False, True, True]))
    np.testing.assert_array_equal(R.Scaled(1.0).per_window(view), [5.5, 0.0, 0.0, 10.0, 0.0])


def test_bounded(pool):
    capped = R.Bounded(4.0).per_window(pool)
    assert capped.max() == pytest.approx(4.0, rel=1e-12)
    np.testing.assert_allclose(capped, AGG * 0.4, rtol=1e-12)  # uniform scaling keeps the shape
    np.testing.assert_array_equal(R.Bounded(10.0).per_window(pool), AGG)  # peak reached: unchanged
    np.testing.assert_array_equal(R.Bounded(1e9).per_window(pool), AGG)  # below the cap: unchanged


def test_per_window(pool):
    np.testing.assert_array_equal(R.PerWindow((1.0, 2.0, 3.0, 4.0, 5.0)).per_window(pool), [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="4 per-window rates but the pool view has 5 windows"):
        R.PerWindow((1.0, 2.0, 3.0, 4.0)).per_window(pool)


def test_by_timestamp(pool):
    fn = R.ByTimestamp(tuple((600 * i, float(i)) for i in range(5)))
    np.testing.assert_array_equal(fn.per_window(pool), [0, 1, 2, 3, 4])
    for bad in ({0: 1.0, 600: 1.0}, {600 * i + 1: 1.0 for i in range(5)}):
        with pytest.raises(ValueError, match="Rate function timestamps don't match pool timestamps"):
            R.as_rate_fn(bad).per_window(pool)


def test_by_timestamp_on_a_span(pool):
    view = pool.span(300, 1500)  # windows [300, 600), [600, 1200), [1200, 1500) -> starts 0, 300, 900
    np.testing.assert_array_equal(R.as_rate_fn({0: 1.0, 300: 2.0, 900: 3.0}).per_window(view), [1, 2, 3])
    with pytest.raises(ValueError, match="Rate function timestamps don't match pool timestamps"):
        R.as_rate_fn({0: 1.0, 600: 2.0, 1200: 3.0}).per_window(view)


def test_profile_mean_over_a_week():
    week = make_pool(np.ones((1, WEEK // 600)))
    for wf in (1.0, 0.4, 2.0):
        fn = R.Profile(mean=120.0, daily_amplitude=0.7, peak_hour=9.5, weekend_factor=wf)
        # window midpoints sample each day evenly: the weekly mean is exact up to rounding
        assert fn.per_window(week).mean() == pytest.approx(120.0, rel=1e-12)
        t = np.arange(0, WEEK, 60.0)
        assert fn.at(t).mean() == pytest.approx(120.0, rel=1e-9)


def test_profile_weekend_factor_and_peak_hour():
    fn = R.Profile(mean=10.0, daily_amplitude=0.5, peak_hour=14.0, weekend_factor=0.25)
    day = np.arange(0, DAY, 1.0)
    weekday = [fn.at(day + d * DAY).mean() for d in range(7)]
    assert weekday[5] / weekday[0] == pytest.approx(0.25, rel=1e-9)
    assert weekday[6] / weekday[4] == pytest.approx(0.25, rel=1e-9)
    np.testing.assert_allclose(weekday[:5], weekday[0], rtol=1e-12)
    # peak at 14:00 every day; the trough 12 h away; amplitude 0.5 around the day's mean
    for d in (0, 3, 6):
        r = fn.at(day + d * DAY)
        assert np.argmax(r) == 14 * 3600
        assert r.max() / r.min() == pytest.approx(1.5 / 0.5, rel=1e-9)
    # a second week repeats the first
    np.testing.assert_allclose(fn.at(day + 9 * DAY), fn.at(day + 2 * DAY))


def test_profile_uses_absolute_time_of_a_view():
    week = make_pool(np.ones((1, WEEK // 600)))
    fn = R.Profile(mean=5.0, weekend_factor=0.5)
    view = week.span(5 * DAY + 300, 5 * DAY + 3900)  # Saturday, from mid-window
    mid = 5 * DAY + 300 + view.window_start + view.window_len / 2.0
    np.testing.assert_allclose(fn.per_window(view), fn.at(mid), rtol=1e-12)


def test_profile_arguments():
    with pytest.raises(ValueError, match="daily_amplitude"):
        R.Profile(1.0, daily_amplitude=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        R.Profile(-1.0)
    with pytest.raises(ValueError, match="non-negative"):
        R.Profile(1.0, weekend_factor=-0.5)


def test_of_time(pool):
    fn = R.OfTime(lambda t: t / 100.0)
    np.testing.assert_allclose(fn.per_window(pool), [3.0, 9.0, 15.0, 21.0, 27.0])
    view = pool.span(150, 1300)  # midpoints of [150, 600), [600, 1200), [1200, 1300) relative to 150
    np.testing.assert_allclose(fn.per_window(view), [2.25, 7.5, 11.0])
    np.testing.assert_array_equal(R.OfTime(lambda t: 4.0).per_window(pool), np.full(5, 4.0))  # scalar broadcast
    np.testing.assert_allclose(R.as_rate_fn(np.sqrt).per_window(pool), np.sqrt([300, 900, 1500, 2100, 2700]))


# --------------------------------------------------------------------------- as_rate_fn
def test_as_rate_fn_dispatch():
    assert R.as_rate_fn(None) == R.Scaled(1.0)
    for x in (3, 3.0, np.float32(3.0), np.int64(3)):
        fn = R.as_rate_fn(x)
        assert type(fn) is R.Constant and fn.rate == 3.0
    fn = R.Bounded(5.0)
    assert R.as_rate_fn(fn) is fn
    assert R.as_rate_fn({600: 2, 0: 1}) == R.ByTimestamp(((0, 1.0), (600, 2.0)))
    for seq in ([1, 2, 3], (1.0, 2.0, 3.0), np.array([1.0, 2.0, 3.0])):
        assert R.as_rate_fn(seq) == R.PerWindow((1.0, 2.0, 3.0))

    def f(t):
        return t

    assert R.as_rate_fn(f) == R.OfTime(f)


@pytest.mark.parametrize("bad", [True, False, object(), {1.0, 2.0}, "fast", b"12", 3 + 0j])
def test_as_rate_fn_type_error(bad):
    with pytest.raises(TypeError, match="cannot use .* as a rate function"):
        R.as_rate_fn(bad)


# --------------------------------------------------------------------------- describe / restore
@pytest.mark.parametrize("fn", [
    R.Constant(12.5), R.Scaled(1.0), R.Scaled(0.25), R.Bounded(300.0), R.PerWindow((1.0, 0.0, 2.5)),
    R.ByTimestamp(((0, 1.0), (600, 2.0))), R.Profile(40.0, 0.3, 20.0, 0.6), R.Profile(7.0),
])
def test_description_round_trip(fn, pool):
    desc = fn.describe()
    again = R.from_description(json.loads(json.dumps(desc)))  # as stored in trace metadata
    assert again == fn
    assert again.describe() == desc
    try:
        want = fn.per_window(pool)
    except ValueError:
        return
    np.testing.assert_array_equal(again.per_window(pool), want)


def test_description_of_callables_cannot_be_restored():
    def my_rate(t):
        return 1.0 + 0 * t

    desc = R.OfTime(my_rate).describe()
    assert desc["kind"] == "callable" and "my_rate" in desc["name"]
    json.dumps(desc)
    with pytest.raises(ValueError, match="cannot restore a rate function of kind 'callable'"):
        R.from_description(desc)
    with pytest.raises(ValueError, match="kind 'nope'"):
        R.from_description({"kind": "nope"})


# --------------------------------------------------------------------------- client targets
def test_client_targets_split(pool):
    agg = np.array([11.0, 3.0, 8.0, 1.0, 0.0])
    t = R.client_targets(pool, agg)
    assert t.shape == (3, 5)
    active = pool.active.any(axis=0)
    # sums to the aggregate where any client is active, 0 where none
    np.testing.assert_allclose(t.sum(axis=0)[active], agg[active], rtol=1e-12)
    assert (t[:, ~active] == 0).all()
    # in proportion to the clients' own rates (idle clients get 0)
    np.testing.assert_allclose(t[:, 0], [2.0, 1.0, 8.0], rtol=1e-12)
    np.testing.assert_allclose(t[:, 2], [4.0, 0.0, 4.0], rtol=1e-12)
    np.testing.assert_allclose(t[:, 3], [0.3, 0.1, 0.6], rtol=1e-12)
    # native rates come back exactly
    np.testing.assert_array_equal(R.client_targets(pool, R.Scaled(1.0).per_window(pool)), pool.rate)


def test_client_targets_filtered_windows(pool):
    view = pool.filter(lambda p: np.array([[True, True, True, True, True],
                                           [False, True, True, True, True],
                                           [True, True, True, False, True]]))
    t = R.client_targets(view, np.full(5, 10.0))
    np.testing.assert_allclose(t[:, 0], [2.0, 0.0, 8.0])
    np.testing.assert_allclose(t[:, 3], [7.5, 2.5, 0.0])


def test_client_targets_errors(pool):
    with pytest.raises(ValueError, match="expected 5 per-window rates"):
        R.client_targets(pool, np.ones(4))
    for bad in (-1.0, np.nan, np.inf):
        agg = np.ones(5)
        agg[2] = bad
        with pytest.raises(ValueError, match="target rate at window starting 1200 s"):
            R.client_targets(pool, agg)
