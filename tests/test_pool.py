"""ClientPool views (span, filters), aggregate rate and cdfs, against slow per-window
Python references on a small synthetic pool and on the real ServeGen pools."""
from __future__ import annotations

import numpy as np
import pytest

from servegen_fast.model.distributions import DistTableBuilder
from servegen_fast.model.fields import LAW_GAMMA, LAW_IDLE, LAW_WEIBULL, NO_DIST
from servegen_fast.model.pool import ClientPool, regular_grid

STATS = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


# --------------------------------------------------------------------------- fixtures
def make_pool() -> ClientPool:
    """3 clients x 5 windows of 600 s; length windows of 1200 s (D = 3)."""
    rate = np.array([[1.0, 0.0, 2.0, 3.0, 0.0],
                     [0.0, 0.0, 0.0, 0.0, 4.0],
                     [5.0, 6.0, 0.0, 7.0, 8.0]])
    cv = np.array([[0.5, 0.0, 1.5, 2.5, 0.0],
                   [0.0, 0.0, 0.0, 0.0, 3.0],
                   [1.0, 2.0, 0.0, 0.7, 4.0]])
    law = np.where(rate > 0, LAW_GAMMA, LAW_IDLE).astype(np.uint8)
    law[2, 3] = LAW_WEIBULL
    b = DistTableBuilder()
    small = b.add([10, 20], [0.5, 0.5])           # avg 15, max 20
    mid = b.add([100, 200, 300], [0.2, 0.6, 0.2])  # avg 200, max 300
    big = b.add([1000, 5000], [0.9, 0.1])         # avg 1400, max 5000
    out_a = b.add([1, 2], [0.5, 0.5])
    out_b = b.add([50], [1.0])
    inp = np.array([[small, mid, big], [mid, mid, mid], [big, small, NO_DIST]])
    out = np.array([[out_a, out_a, out_b], [out_b, out_b, out_b], [out_a, out_b, NO_DIST]])
    dist_id = np.stack([inp, out], axis=2).astype(np.int32)
    start, wlen, widx, lidx = regular_grid(5, 600, 1200)
    return ClientPool(category="language", model="toy", client_ids=np.array([10, 11, 12], dtype=np.int64),
                      window_start=start, window_len=wlen, window_index=widx, length_index=lidx,
                      rate=rate, cv=cv, law=law, shape=np.where(rate > 0, 1.0, 0.0),
                      scale=np.where(rate > 0, 2.0, 0.0), fields=("input_tokens", "output_tokens"),
                      dist_id=dist_id, dists=b.build(), window_size=600, length_window_size=1200)


@pytest.fixture(scope="module")
def toy():
    return make_pool()


@pytest.fixture(scope="module")
def m_large(real_pool):
    return real_pool("language/m-large")


@pytest.fixture(scope="module")
def deepseek(real_pool):
    return real_pool("reason/deepseek-r1")


@pytest.fixture(scope="module")
def m_large_span(m_large):
    return m_large.span(72000, 75600)


# --------------------------------------------------------------------------- slow references
_STAT_CACHE: dict = {}


def dist_stat(pool: ClientPool, k: int, name: str) -> float:
    """Statistic of distribution k, one value at a time (ServeGen's compute_stats)."""
    key = (id(pool.dists), k, name)
    if key not in _STAT_CACHE:
        _STAT_CACHE[key] = (pool.dists, _dist_stat(pool, k, name))  # keeps the table alive: ids stay unique
    return _STAT_CACHE[key][1]


def _dist_stat(pool: ClientPool, k: int, name: str) -> float:
    lo, hi = int(pool.dists.offsets[k]), int(pool.dists.offsets[k + 1])
    values = pool.dists.values[lo:hi].tolist()
    cdf = pool.dists.cdf[lo:hi].tolist()
    if name == "max":
        return values[-1]
    if name == "avg":
        total, prev = 0.0, 0.0
        for v, c in zip(values, cdf):
            total += v * (c - prev)
            prev = c
        return total
    for v, c in zip(values, cdf):
        if c >= STATS[name]:
            return v
    return values[-1]


def window_stat(pool: ClientPool, c: int, w: int, field: str, name: str) -> float | None:
    k = int(pool.dist_id[c, pool.length_index[w], pool.fields.index(field)])
    return None if k == NO_DIST else dist_stat(pool, k, name)


def is_present(pool: ClientPool, c: int, w: int) -> bool:
    return True if pool.present is None else bool(pool.present[c, w])


def is_active(pool: ClientPool, c: int, w: int) -> bool:
    return is_present(pool, c, w) and pool.law[c, w] != LAW_IDLE and pool.rate[c, w] > 0


def reference_filter(pool: ClientPool, keep) -> tuple[list[int], np.ndarray]:
    """ServeGen's view filter by hand: keep(c, w) per window; a client stays if one of its
    kept windows is active. Returns (kept client rows, present[kept rows])."""
    C, W = pool.n_clients, pool.n_windows
    present = np.array([[is_present(pool, c, w) and bool(keep(c, w)) for w in range(W)] for c in range(C)],
                       dtype=bool).reshape(C, W)
    rows = [c for c in range(C)
            if any(present[c, w] and pool.law[c, w] != LAW_IDLE and pool.rate[c, w] > 0 for w in range(W))]
    return rows, present[rows]


def _unweighted(values: list[float]):
    vals = sorted(values)
    n = len(vals)
    return vals, [(k + 1) / n for k in range(n)]


def _weighted(pairs: list[tuple[float, float]]):
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    if total == 0:
        return None
    probs, acc = [], 0.0
    for _, w in pairs:
        acc += w / total
        probs.append(acc)
    return [v for v, _ in pairs], probs


def reference_cdfs(pool: ClientPool, windows) -> dict:
    """ServeGen's get_cdfs, per window, for the given window positions."""
    C = pool.n_clients
    in_view = [c for c in range(C) if any(is_active(pool, c, w) for w in range(pool.n_windows))]
    out: dict = {"rate": {}, "cv": {}}
    for name in pool.fields:
        out[name] = {s: {} for s in ("avg", "p50", "p95", "p99")}
    for w in windows:
        ts = int(pool.window_start[w])
        with_rate = [c for c in in_view if is_present(pool, c, w) and pool.law[c, w] != LAW_IDLE]
        if with_rate:
            out["rate"][ts] = _unweighted([pool.rate[c, w] for c in with_rate])
            cvs = _weighted([(pool.cv[c, w], pool.rate[c, w]) for c in with_rate])
            if cvs is not None:
                out["cv"][ts] = cvs
        for name in pool.fields:
            for stat in ("avg", "p50", "p95", "p99"):
                pairs = []
                for c in in_view:
                    if not is_present(pool, c, w):
                        continue
                    v = window_stat(pool, c, w, name, stat)
                    if v is None:
                        continue
                    pairs.append((v, pool.rate[c, w] if pool.law[c, w] != LAW_IDLE else 0.0))
                if pairs:
                    got = _weighted(pairs)
                    if got is not None:
                        out[name][stat][ts] = got
    return out


def assert_cdfs_match(pool: ClientPool, windows, got: dict | None = None):
    got = pool.cdfs() if got is None else got
    want = reference_cdfs(pool, windows)
    ts_sel = {int(pool.window_start[w]) for w in windows}
    checked = 0
    for key in ("rate", "cv"):
        assert {t for t in got.get(key, {}) if t in ts_sel} == set(want[key]), key
        for ts, (v, p) in want[key].items():
            gv, gp = got[key][ts]
            np.testing.assert_array_equal(gv, v, err_msg=f"{key} @ {ts}")
            np.testing.assert_allclose(gp, p, rtol=0, atol=1e-9, err_msg=f"{key} @ {ts}")
            checked += 1
    for name in pool.fields:
        for stat in ("avg", "p50", "p95", "p99"):
            w_stat = want[name][stat]
            g_stat = got.get(name, {}).get(stat, {})
            assert {t for t in g_stat if t in ts_sel} == set(w_stat), (name, stat)
            for ts, (v, p) in w_stat.items():
                gv, gp = g_stat[ts]
                if stat == "avg":  # a sum in a different order
                    np.testing.assert_allclose(gv, v, rtol=1e-12, err_msg=f"{name}.{stat} @ {ts}")
                else:
                    np.testing.assert_array_equal(gv, v, err_msg=f"{name}.{stat} @ {ts}")
                np.testing.assert_allclose(gp, p, rtol=0, atol=1e-9, err_msg=f"{name}.{stat} @ {ts}")
                checked += 1
    return checked


def assert_same_view(a: ClientPool, b: ClientPool):
    for name in ("client_ids", "window_start", "window_len", "window_index", "length_index",
                 "rate", "cv", "law", "shape", "scale", "dist_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.origin == b.origin
    assert (a.present is None) == (b.present is None)
    if a.present is not None:
        np.testing.assert_array_equal(a.present, b.present)


# --------------------------------------------------------------------------- span, synthetic
def test_span_inside_one_window(toy):
    s = toy.span(100, 400)
    assert s.n_windows == 1
    np.testing.assert_array_equal(s.window_start, [0])
    np.testing.assert_array_equal(s.window_len, [300])
    np.testing.assert_array_equal(s.window_index, [0])
    np.testing.assert_array_equal(s.client_ids, [10, 12])  # client 11 is idle in window 0
    np.testing.assert_array_equal(s.rate, [[1.0], [5.0]])
    assert s.origin == 100 and s.duration == 300
    assert s.dists is toy.dists
    np.testing.assert_array_equal(s.dist_id, toy.dist_id[[0, 2]])


def test_span_across_a_boundary(toy):
    s = toy.span(500, 700)
    np.testing.assert_array_equal(s.window_start, [0, 100])
    np.testing.assert_array_equal(s.window_len, [100, 100])
    np.testing.assert_array_equal(s.window_index, [0, 1])
    np.testing.assert_array_equal(s.length_index, [0, 0])
    np.testing.assert_array_equal(s.client_ids, [10, 12])
    np.testing.assert_array_equal(s.aggregate_rate(), [6.0, 6.0])
    s = toy.span(1100, 1300)  # crosses a length-window boundary too
    np.testing.assert_array_equal(s.length_index, [0, 1])
    np.testing.assert_array_equal(s.client_ids, [10, 12])
    np.testing.assert_array_equal(s.window_dist_id("input_tokens"), toy.window_dist_id("input_tokens")[[0, 2]][:, 1:3])


def test_span_drops_clients_idle_in_it(toy):
    s = toy.span(1200, 1800)  # window 2: only client 10 has a rate
    np.testing.assert_array_equal(s.client_ids, [10])
    s = toy.span(2400, 3000)
    np.testing.assert_array_equal(s.client_ids, [11, 12])


def test_span_past_the_end_stops_at_pool_end(toy):
    s = toy.span(2700, 10_000)
    np.testing.assert_array_equal(s.window_start, [0])
    np.testing.assert_array_equal(s.window_len, [300])
    assert s.duration == 300 and s.origin == 2700
    whole = toy.span(0, 10**9)
    assert_same_view(whole, toy)


@pytest.mark.parametrize("start, end", [(3000, 4000), (5000, 6000), (3000, 3000), (300, 300), (0, 0)])
def test_empty_span(toy, start, end):
    s = toy.span(start, end)
    assert s.n_windows == 0 and s.n_clients == 0 and s.duration == 0
    assert s.rate.shape == (0, 0) and s.dist_id.shape == (0, 3, 2)
    assert s.aggregate_rate().shape == (0,)
    assert s.cdfs() == {}
    assert s.span(0, 100).n_windows == 0
    assert s.filter_by_cv(0, 10).n_clients == 0


def test_span_end_before_start(toy):
    with pytest.raises(ValueError, match="must not be before"):
        toy.span(600, 100)


@pytest.mark.parametrize("outer, inner", [((0, 3000), (0, 3000)), ((100, 2900), (450, 1900)),
                                          ((700, 2500), (0, 50)), ((1200, 3000), (500, 5000))])
def test_nested_spans_equal_single_span(toy, outer, inner):
    nested = toy.span(*outer).span(*inner)
    start = outer[0] + inner[0]
    single = toy.span(start, min(outer[0] + inner[1], outer[1]))
    assert_same_view(nested, single)


def test_span_rebases_times(toy):
    s = toy.span(900, 2100)
    np.testing.assert_array_equal(s.window_start, [0, 300, 900])
    np.testing.assert_array_equal(s.window_len, [300, 600, 300])
    np.testing.assert_array_equal(s.window_index, [1, 2, 3])
    assert s.origin == 900
    assert set(s.cdfs()["rate"]) == {0, 300, 900}
    s2 = s.span(300, 900)
    np.testing.assert_array_equal(s2.window_start, [0])
    np.testing.assert_array_equal(s2.window_index, [2])
    assert s2.origin == 1200


# --------------------------------------------------------------------------- span, real data
def test_span_on_real_data(m_large):
    W = m_large.n_windows
    s = m_large.span(72100, 72400)
    assert s.n_windows == 1 and s.window_len.tolist() == [300] and s.window_start.tolist() == [0]
    assert s.window_index.tolist() == [120] and s.length_index.tolist() == [3]
    act = m_large.active[:, 120]
    np.testing.assert_array_equal(s.client_ids, m_large.client_ids[act])
    np.testing.assert_array_equal(s.rate[:, 0], m_large.rate[act, 120])
    np.testing.assert_allclose(s.aggregate_rate(), m_large.aggregate_rate()[[120]], rtol=1e-12)

    s = m_large.span(72300, 72900)
    assert s.window_len.tolist() == [300, 300] and s.window_start.tolist() == [0, 300]
    np.testing.assert_array_equal(s.client_ids, m_large.client_ids[m_large.active[:, 120:122].any(axis=1)])

    end = W * 600
    s = m_large.span(end - 1000, end + 5000)
    assert s.window_index.tolist() == [W - 2, W - 1] and s.window_len.tolist() == [400, 600]
    assert s.duration == 1000

    for start in (end, end + 600):
        s = m_large.span(start, start + 3600)
        assert s.n_windows == 0 and s.n_clients == 0
        assert s.aggregate_rate().shape == (0,) and s.cdfs() == {}

    nested = m_large.span(3600, 7 * 86400).span(86400, 2 * 86400 + 300)
    assert_same_view(nested, m_large.span(90000, 3600 + 2 * 86400 + 300))
    assert nested.origin == 90000 and nested.window_start[0] == 0


# --------------------------------------------------------------------------- filters, synthetic
def test_filters_on_synthetic_pool(toy):
    # per-window input avg: 10: 15 15 200 200 1400 | 11: 200 x5 | 12: 1400 1400 15 15 (none)
    # per-window input max: 10: 20 20 300 300 5000 | 11: 300 x5 | 12: 5000 5000 20 20 (none)
    # per-window output:    10: a a a a b          | 11: b x5   | 12: a a b b (none)  (a: avg 1.5 max 2, b: 50)
    f = toy.filter_by_cv(0.9, 2.6)
    np.testing.assert_array_equal(f.client_ids, [10, 12])
    np.testing.assert_array_equal(f.active, [[False, False, True, True, False],
                                             [True, True, False, False, False]])
    np.testing.assert_array_equal(f.aggregate_rate(), [5.0, 6.0, 2.0, 3.0, 0.0])

    f = toy.filter_by_avg_input_len(100, 1000)  # only the 'mid' distribution (avg 200)
    np.testing.assert_array_equal(f.client_ids, [10, 11])  # 12 never has 'mid'
    np.testing.assert_array_equal(f.present, [[False, False, True, True, False], [True] * 5])
    np.testing.assert_array_equal(f.aggregate_rate(), [0.0, 0.0, 2.0, 3.0, 4.0])

    f = toy.filter_by_max_input_len(300)
    np.testing.assert_array_equal(f.client_ids, [10, 11, 12])
    np.testing.assert_array_equal(f.present[2], [False, False, True, True, False])  # no distribution: out
    np.testing.assert_array_equal(f.aggregate_rate(), [1.0, 0.0, 2.0, 10.0, 4.0])

    f = toy.filter_by_max_output_len(2)
    np.testing.assert_array_equal(f.client_ids, [10, 12])
    np.testing.assert_array_equal(f.aggregate_rate(), [6.0, 6.0, 2.0, 3.0, 0.0])

    f = toy.filter_by_avg_output_len(40, 60)
    np.testing.assert_array_equal(f.client_ids, [11, 12])  # 10 has 'b' only in an idle window
    np.testing.assert_array_equal(f.aggregate_rate(), [0.0, 0.0, 0.0, 7.0, 4.0])


def test_filter_keeps_client_with_one_active_window(toy):
    # 11 is active only in window 4: a filter keeping just that window keeps it
    f = toy.filter(lambda p: p.window_start == 2400)
    np.testing.assert_array_equal(f.client_ids, [11, 12])
    f = toy.filter(lambda p: p.window_start != 2400)
    np.testing.assert_array_equal(f.client_ids, [10, 12])


@pytest.mark.parametrize("shape", ["CW", "C", "W"])
def test_vectorised_predicate_shapes(toy, shape):
    if shape == "CW":
        f = toy.filter(lambda p: p.rate >= 3)
        keep = lambda c, w: toy.rate[c, w] >= 3  # noqa: E731
    elif shape == "C":
        f = toy.filter(lambda p: p.client_ids != 10)
        keep = lambda c, w: toy.client_ids[c] != 10  # noqa: E731
    else:
        f = toy.filter(lambda p: p.window_start >= 1800)
        keep = lambda c, w: toy.window_start[w] >= 1800  # noqa: E731
    rows, present = reference_filter(toy, keep)
    np.testing.assert_array_equal(f.client_ids, toy.client_ids[rows])
    np.testing.assert_array_equal(f.present, present)
    assert len(rows) < toy.n_clients or not present.all()


@pytest.mark.parametrize("bad", [lambda p: np.ones(p.n_clients + 1, bool),
                                 lambda p: np.ones((p.n_windows, p.n_clients), bool),
                                 lambda p: np.ones((p.n_clients, p.n_windows, 1), bool),
                                 lambda p: True])
def test_bad_predicate_shape(toy, bad):
    with pytest.raises(ValueError, match=r"filter predicate returned shape .*expected \(3, 5\), \(3,\) or \(5,\)"):
        toy.filter(bad)


def test_filters_matching_nothing_give_empty_pool(toy):
    for f in (toy.filter_by_cv(100, 200), toy.filter_by_avg_input_len(1e9, 2e9), toy.filter_by_max_input_len(1),
              toy.filter_by_max_output_len(0), toy.filter_by_avg_output_len(-5, -1),
              toy.filter(lambda p: np.zeros(p.rate.shape, bool))):
        assert f.n_clients == 0 and f.n_windows == toy.n_windows
        assert f.aggregate_rate().tolist() == [0.0] * 5
        assert f.cdfs() == {}


def test_filters_compose(toy):
    a = toy.filter_by_cv(0.6, 5).filter_by_max_input_len(300)
    b = toy.filter(lambda p: (p.law != LAW_IDLE) & (p.cv >= 0.6) & (p.cv <= 5)).filter_by_max_input_len(300)
    assert_same_view(a, b)

    def keep(c, w):
        mx = window_stat(toy, c, w, "input_tokens", "max")
        return toy.law[c, w] != LAW_IDLE and 0.6 <= toy.cv[c, w] <= 5 and mx is not None and mx <= 300
    rows, present = reference_filter(toy, keep)
    np.testing.assert_array_equal(a.client_ids, toy.client_ids[rows])
    np.testing.assert_array_equal(a.present, present)
    assert len(rows) == 3 and present.sum() == 4


def test_cdfs_on_synthetic_pool(toy):
    got = toy.cdfs()
    # window 1: 10 and 11 idle, 12 at rate 6; window 4: 11 (cv 3, rate 4) and 12 (cv 4, rate 8)
    np.testing.assert_array_equal(got["rate"][600][0], [6.0])
    np.testing.assert_array_equal(got["rate"][2400][0], [4.0, 8.0])
    np.testing.assert_allclose(got["rate"][2400][1], [0.5, 1.0])
    np.testing.assert_array_equal(got["cv"][2400][0], [3.0, 4.0])
    np.testing.assert_allclose(got["cv"][2400][1], [4 / 12, 1.0])
    # window 2: 10 mid (avg 200, rate 2); 11 mid (idle: weight 0); 12 small (avg 15, idle)
    v, p = got["input_tokens"]["avg"][1200]
    np.testing.assert_allclose(v, [15.0, 200.0, 200.0])
    np.testing.assert_allclose(p, [0.0, 0.0, 1.0])
    assert_cdfs_match(toy, range(toy.n_windows), got)
    f = toy.filter_by_cv(0.9, 5)
    assert assert_cdfs_match(f, range(f.n_windows)) > 0


def test_cdfs_all_idle_window_does_not_poison_later_windows(toy):
    # window 1 of client 10 alone is idle; the later windows must still have finite probs
    s = toy.select_clients([0])
    got = s.cdfs()
    assert 600 not in got["cv"] and 600 not in got["input_tokens"]["avg"]
    for stat in got["input_tokens"].values():
        for ts, (v, p) in stat.items():
            assert np.all(np.isfinite(p)) and p[-1] == pytest.approx(1.0), ts
    assert_cdfs_match(s, range(s.n_windows), got)


def test_aggregate_rate_of_filtered_pool(toy):
    f = toy.filter(lambda p: p.rate != 5.0).filter_by_cv(0.6, 10)
    want = [sum(f.rate[c, w] for c in range(f.n_clients) if f.present[c, w] and f.law[c, w] != LAW_IDLE)
            for w in range(f.n_windows)]
    np.testing.assert_array_equal(f.aggregate_rate(), want)
    assert want != toy.aggregate_rate().tolist()


# --------------------------------------------------------------------------- filters, real data
def _between(values: np.ndarray, q: float) -> float:
    """A threshold strictly between two distinct data values near quantile q (no ties)."""
    u = np.unique(values[np.isfinite(values)])
    i = min(max(int(q * len(u)), 1), len(u) - 1)
    return float((u[i - 1] + u[i]) / 2)


def _check_filter(pool: ClientPool, filtered: ClientPool, keep):
    rows, present = reference_filter(pool, keep)
    assert 0 < len(rows) < pool.n_clients, "pick a threshold that keeps some clients and drops some"
    np.testing.assert_array_equal(filtered.client_ids, pool.client_ids[rows])
    np.testing.assert_array_equal(filtered.present, present)
    np.testing.assert_array_equal(filtered.rate, pool.rate[rows])
    np.testing.assert_array_equal(filtered.dist_id, pool.dist_id[rows])
    want = [sum(pool.rate[c, w] for i, c in enumerate(rows) if present[i, w] and pool.law[c, w] != LAW_IDLE)
            for w in range(pool.n_windows)]
    np.testing.assert_allclose(filtered.aggregate_rate(), want, rtol=1e-12, atol=0)


def _stats(pool: ClientPool, field: str, stat: str) -> np.ndarray:
    return np.array([[np.nan if (v := window_stat(pool, c, w, field, stat)) is None else v
                      for w in range(pool.n_windows)] for c in range(pool.n_clients)])


def test_filter_by_cv_real(m_large_span):
    p = m_large_span
    lo, hi = _between(p.cv[p.active], 0.3), _between(p.cv[p.active], 0.7)
    _check_filter(p, p.filter_by_cv(lo, hi), lambda c, w: p.law[c, w] != LAW_IDLE and lo <= p.cv[c, w] <= hi)


@pytest.mark.parametrize("field, method", [("input_tokens", "filter_by_avg_input_len"),
                                           ("output_tokens", "filter_by_avg_output_len")])
def test_filter_by_avg_len_real(m_large_span, field, method):
    p = m_large_span
    avg = _stats(p, field, "avg")
    lo, hi = _between(avg, 0.2), _between(avg, 0.6)
    _check_filter(p, getattr(p, method)(lo, hi), lambda c, w: lo <= avg[c, w] <= hi)


@pytest.mark.parametrize("field, method", [("input_tokens", "filter_by_max_input_len"),
                                           ("output_tokens", "filter_by_max_output_len")])
def test_filter_by_max_len_real(m_large_span, field, method):
    p = m_large_span
    mx = _stats(p, field, "max")
    limit = _between(mx, 0.5)
    _check_filter(p, getattr(p, method)(limit), lambda c, w: mx[c, w] <= limit)
    # an integer limit equal to a data value keeps that value (<=)
    exact = float(np.nanmedian(mx))
    _check_filter(p, getattr(p, method)(exact), lambda c, w: mx[c, w] <= exact)


def test_filter_by_predicate_real(m_large_span):
    p = m_large_span
    assert p.n_clients not in (p.n_windows,)
    cases = [(lambda q: q.rate > np.median(p.rate[p.active]),
              lambda c, w: p.rate[c, w] > np.median(p.rate[p.active])),
             (lambda q: q.client_ids % 3 == 0, lambda c, w: p.client_ids[c] % 3 == 0),
             (lambda q: q.window_start < 1800, lambda c, w: p.window_start[w] < 1800)]
    for pred, keep in cases:
        _check_filter(p, p.filter(pred), keep)
    with pytest.raises(ValueError, match="filter predicate returned shape"):
        p.filter(lambda q: np.ones(q.n_clients - 1, bool))
    empty = p.filter_by_cv(1e6, 1e7)
    assert empty.n_clients == 0 and empty.cdfs() == {}
    np.testing.assert_array_equal(empty.aggregate_rate(), np.zeros(p.n_windows))


def test_chained_filters_real(m_large_span):
    p = m_large_span
    avg = _stats(p, "input_tokens", "avg")
    lo = _between(avg, 0.3)
    cv_hi = _between(p.cv[p.active], 0.8)
    f = p.filter_by_avg_input_len(lo, np.inf).filter_by_cv(0, cv_hi)
    _check_filter(p, f, lambda c, w: avg[c, w] >= lo and p.law[c, w] != LAW_IDLE and p.cv[c, w] <= cv_hi)


# --------------------------------------------------------------------------- cdfs, real data
def test_cdfs_real_span(m_large_span):
    assert assert_cdfs_match(m_large_span, range(m_large_span.n_windows)) > 0


def test_cdfs_real_full_pool_windows(m_large):
    got = m_large.cdfs()
    # the set of windows with a rate CDF: every window where some client is active
    want_ts = set((np.flatnonzero(m_large.active.any(axis=0)) * 600).tolist())
    assert set(got["rate"]) == want_ts == set(got["cv"])
    windows = [0, 1, 120, 1000, 1500, m_large.n_windows - 1]
    assert assert_cdfs_match(m_large, windows, got) > 20


def test_cdfs_real_filtered(m_large_span):
    p = m_large_span
    max_out = _between(_stats(p, "output_tokens", "max"), 0.7)
    f = p.filter_by_cv(0, _between(p.cv[p.active], 0.5)).filter_by_max_output_len(max_out)
    assert 0 < f.n_clients < p.n_clients and not f.present.all()
    assert assert_cdfs_match(f, range(f.n_windows)) > 0


def test_cdfs_reason_pool(deepseek):
    got = deepseek.cdfs()
    assert set(got) == {"rate", "cv", "input_tokens", "output_tokens", "reason_ratio"}
    v, p = next(iter(got["reason_ratio"]["p50"].values()))
    assert np.all((v >= 0) & (v <= 1))
    assert assert_cdfs_match(deepseek, range(0, deepseek.n_windows, 3), got) > 100
    s = deepseek.span(30_000, 50_000)
    assert assert_cdfs_match(s, range(s.n_windows)) > 0


def test_aggregate_rate_of_filtered_real_pool(m_large):
    f = m_large.filter_by_cv(0.5, 3.0)
    present, rate, law = f.present, f.rate, f.law
    want = np.zeros(f.n_windows)
    for c in range(f.n_clients):
        for w in np.flatnonzero(present[c] & (law[c] != LAW_IDLE)):
            want[w] += rate[c, w]
    np.testing.assert_allclose(f.aggregate_rate(), want, rtol=1e-12, atol=0)
    assert np.all(f.aggregate_rate() <= m_large.aggregate_rate() + 1e-12)
    assert np.any(f.aggregate_rate() < m_large.aggregate_rate())
