"""Fleet-scale populations and horizon extension (servegen_fast/population.py), generating
from them, and partitions generated alone or resumed (trace.write_partitions, CLI)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from servegen_fast.model import population as P
from servegen_fast.sample.generate import generate, generate_table
from servegen_fast.model.fields import LAW_GAMMA
from servegen_fast.io.pool_file import open_pool
from servegen_fast.model.rates import Scaled
from servegen_fast.io.manifest import read_manifest
from servegen_fast.io.trace import read_trace, trace_schema, write_partitions, write_trace

DAY = 86400


@pytest.fixture(scope="module")
def builtin():
    return open_pool("builtin")


def _client_means(pool):
    return np.where(pool.active, pool.rate, 0.0).mean(axis=1)


def _weighted_quantiles(values, weights, qs):
    order = np.argsort(values)
    cw = np.cumsum(weights[order])
    return np.interp(np.asarray(qs) * cw[-1], cw, values[order])


# --------------------------------------------------------------------------- statistics vs the source
def test_population_rate_levels_follow_the_source(builtin):
    """Client mean rates (normalised by their mean) have the source's quantiles, within 0.35 in
    log (the rate jitter is log-normal with sigma 0.25)."""
    pop = P.synthesize(builtin, 50_000, mean_rate=500.0, seed=3)
    src = _client_means(builtin)
    src = src[src > 0] / src[src > 0].mean()
    lvl = pop.mult * _client_means(builtin)[pop.src]
    lvl = lvl / lvl.mean()
    qs = [0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
    diff = np.abs(np.log(np.quantile(lvl, qs)) - np.log(np.quantile(src, qs)))
    assert diff.max() < 0.35, dict(zip(qs, diff))
    # heavy tail kept: the top 1% of clients carry a share of traffic close to the source's
    top = lambda x: np.sort(x)[::-1][: max(1, len(x) // 100)].sum() / x.sum()  # noqa: E731
    assert abs(top(lvl) - top(src)) < 0.05


def test_population_rate_weighted_cv_distribution(builtin):
    """Rate-weighted CV quantiles over one day match the source's within 15%."""
    pop = P.synthesize(builtin, 20_000, mean_rate=100.0, seed=4)
    day = builtin.span(0, DAY)
    src_q = _weighted_quantiles(day.cv[day.active], day.rate[day.active], [0.25, 0.5, 0.75])
    sub = pop.materialize(0, DAY // pop.window_size)
    pop_q = _weighted_quantiles(sub.cv[sub.active], sub.rate[sub.active], [0.25, 0.5, 0.75])
    np.testing.assert_allclose(pop_q, src_q, rtol=0.15)


def test_population_aggregate_profile_and_mean_rate(builtin):
    """The aggregate keeps the source's daily shape (correlation >= 0.95 over 14 days) and has
    the requested mean; a generated trace's hourly counts follow it."""
    pop = P.synthesize(builtin, 20_000, mean_rate=40.0, seed=5)
    agg = pop.aggregate_rate()
    assert np.corrcoef(agg, builtin.aggregate_rate())[0, 1] >= 0.95
    assert agg.mean() == pytest.approx(40.0, rel=1e-9)
    tab = generate_table(pop, None, 2 * DAY, seed=5)
    t = tab.column("timestamp").to_numpy()
    hourly = np.bincount((t // 3600).astype(int), minlength=48)[:48] / 3600.0
    want = agg[: 2 * DAY // 600].reshape(48, 6).mean(axis=1)
    assert np.corrcoef(hourly, want)[0, 1] >= 0.95
    assert len(t) / (2 * DAY) == pytest.approx(want.mean(), rel=0.03)  # renewal mode keeps the mean


def test_mean_over_sets_the_mean_of_that_span(builtin):
    pop = P.synthesize(builtin, 5_000, mean_rate=25.0, duration=7 * DAY, seed=1, mean_over=(DAY, 3 * DAY))
    assert pop.span(DAY, 3 * DAY).aggregate_rate().mean() == pytest.approx(25.0, rel=1e-9)


def test_aggregate_rate_equals_the_sum_over_materialized_clients(builtin):
    pop = P.synthesize(builtin, 3_000, mean_rate=10.0, duration=30 * DAY, seed=2, day_sigma=0.2, growth=0.01)
    view = pop.span(20 * DAY, 20 * DAY + 36_000)
    sub = view.materialize(0, view.n_windows)
    np.testing.assert_allclose(view.aggregate_rate(), np.where(sub.active, sub.rate, 0).sum(axis=0), rtol=1e-9)


def test_population_state_is_o_of_n(builtin):
    pop = P.synthesize(builtin, 200_000, mean_rate=1000.0, duration=30 * DAY, seed=0)
    assert pop.nbytes() <= 40 * pop.n_clients  # no per-window state


def test_population_chunks_respect_the_unit_budget(builtin):
    """A population chunk never holds more than the budget's [clients × windows] arrays."""
    from servegen_fast.sample import plan

    pop = P.synthesize(builtin, 50_000, mean_rate=5.0, seed=0).span(0, DAY)
    chunks = list(plan.plan_chunks(pop, np.ones(pop.n_windows), pop.aggregate_rate(), (0, pop.n_windows),
                                   "renewal", 64 << 20))
    widths = [b - a for a, b in chunks]
    assert sum(widths) == pop.n_windows
    assert max(widths) * 2 * plan._UNIT_BYTES * pop.n_clients <= 64 << 20


@pytest.mark.parametrize("max_shift, day_sigma", [(3600, 0.0), (7200, 0.3), (40 * DAY, 0.0)])
def test_compiled_units_equal_the_numpy_twin(builtin, max_shift, day_sigma):
    """kernels/units.py plans the same units as the NumPy code, value for value and dtype for
    dtype: shifts beyond a whole period, idle windows (factor 0) and several windows a chunk."""
    pop = P.synthesize(builtin, 30_000, mean_rate=500.0, duration=3 * DAY, seed=4, max_shift=max_shift,
                       day_sigma=day_sigma)
    for w0, w1 in ((0, 1), (0, 7), (140, 150), (400, 432)):
        factor = np.linspace(2.0, 0.0, w1 - w0)  # the last window idle when there are several
        a, b = P._units(pop, w0, w1, factor), P._units_numpy(pop, w0, w1, factor)
        assert len(a.law) > 0
        for name in a.__dataclass_fields__:
            x, y = getattr(a, name), getattr(b, name)
            if x is None or y is None:  # `mod`: no modulation in a synthesized population
                assert x is None and y is None, name
                continue
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


def test_a_modulated_source_keeps_its_modulation(builtin):
    """A population of a fitted pool with intra-window modulation carries it to its units."""
    c, w = builtin.rate.shape
    sigma = np.where(np.arange(w) % 2 == 0, 0.5, 0.0)[None, :].repeat(c, 0)
    src = builtin.replace(mod_sigma=sigma, mod_tau=np.full((c, w), 30.0))
    pop = P.synthesize(src, 2_000, mean_rate=50.0, duration=DAY, seed=4)
    u = pop.units(0, 4, np.ones(4))  # the compiled planner (kernels/units.py) gathers it
    assert u.mod is not None and len(u.mod[0]) == len(u.law) and (u.mod[0] > 0).any()
    want = P._units_numpy(pop, 0, 4, np.ones(4))
    for name in u.__dataclass_fields__:
        x, y = getattr(u, name), getattr(want, name)
        for a, b in zip(x, y) if name == "mod" else [(x, y)]:
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name


# --------------------------------------------------------------------------- determinism
def test_population_is_deterministic_and_per_client_keyed(builtin):
    a = P.synthesize(builtin, 2_000, mean_rate=10.0, seed=9)
    b = P.synthesize(builtin, 2_000, mean_rate=10.0, seed=9)
    for name in ("src", "mult", "shift", "cv_factor"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = P.synthesize(builtin, 2_000, mean_rate=10.0, seed=10)
    assert not np.array_equal(a.src, c.src)
    # client i does not depend on N (only the common rate normalisation does)
    big = P.synthesize(builtin, 5_000, mean_rate=10.0, seed=9)
    np.testing.assert_array_equal(big.src[:2_000], a.src)
    np.testing.assert_array_equal(big.shift[:2_000], a.shift)
    np.testing.assert_allclose(big.mult[:2_000] / big.mult[0], a.mult / a.mult[0], rtol=1e-12)
    t1 = generate_table(a, None, 7200, seed=9)
    t2 = generate_table(b, None, 7200, seed=9)
    assert t1.num_rows > 100 and t1.equals(t2)


def test_population_shifts_and_jitter_bounds(builtin):
    pop = P.synthesize(builtin, 10_000, mean_rate=10.0, seed=1, max_shift=1800)
    assert pop.shift.min() == -3 and pop.shift.max() == 3
    none = P.synthesize(builtin, 1_000, mean_rate=10.0, seed=1, max_shift=0, rate_sigma=0, cv_sigma=0)
    assert np.all(none.shift == 0) and np.all(none.cv_factor == 1.0)
    assert np.allclose(none.mult, none.mult[0])


def test_gamma_shape_follows_the_jittered_cv(builtin):
    pop = P.synthesize(builtin, 500, mean_rate=10.0, seed=2, cv_sigma=0.3)
    sub = pop.materialize(0, 36)
    g = sub.active & (sub.law == LAW_GAMMA)
    src = builtin.span(0, 36 * 600)
    # the source's Gamma shapes are 1/cv^2; the jitter keeps that relation
    srcg = src.active & (src.law == LAW_GAMMA)
    assert np.allclose(src.shape[srcg], 1 / src.cv[srcg] ** 2, rtol=1e-6)
    np.testing.assert_allclose(sub.shape[g], 1 / sub.cv[g] ** 2, rtol=1e-6)


# --------------------------------------------------------------------------- horizon extension
def test_extension_within_the_source_is_the_source(builtin):
    ext = P.extend_horizon(builtin, builtin.duration)
    for mode in ("servegen", "renewal"):
        want = generate_table(builtin, None, 7200, start=5 * 3600, seed=3, mode=mode)
        got = generate_table(ext, None, 7200, start=5 * 3600, seed=3, mode=mode)
        assert want.num_rows > 1000 and got.equals(want)


def test_extension_repeats_whole_weeks_and_days(builtin):
    """A 14-day source repeats in 14-day periods (whole weeks); a 1-day source in days. Rates
    repeat exactly, but the randomness differs (windows keep their own index)."""
    ext = P.extend_horizon(builtin, 30 * DAY)
    agg = ext.aggregate_rate()
    assert len(agg) == 30 * 144
    np.testing.assert_array_equal(agg[14 * 144: 28 * 144], agg[:14 * 144])
    day1 = builtin.span(0, DAY)
    one = P.extend_horizon(day1, 7 * DAY)
    a = one.aggregate_rate().reshape(7, 144)
    assert np.all(a == a[0])
    t = generate_table(one, Scaled(0.002), 7 * DAY, seed=1).column("timestamp").to_numpy()
    per_day = np.bincount((t // DAY).astype(int), minlength=7)
    assert per_day.min() > 0.9 * per_day.mean()
    d0 = t[t < DAY]
    d1 = t[(t >= DAY) & (t < 2 * DAY)] - DAY
    assert len(d0) != len(d1) or not np.array_equal(d0, d1)


def test_extension_growth_and_day_variation(builtin):
    grow = P.extend_horizon(builtin, 28 * DAY, growth=0.05)
    daily = grow.aggregate_rate().reshape(28, 144).mean(axis=1)
    np.testing.assert_allclose(daily[14:] / daily[:14], 1.05 ** 14, rtol=1e-9)
    var = P.extend_horizon(builtin, 28 * DAY, day_sigma=0.2, seed=4)
    f = var.day_factor
    assert len(f) == 28 and 0.1 < np.std(np.log(f)) < 0.3
    again = P.extend_horizon(builtin, 28 * DAY, day_sigma=0.2, seed=4)
    np.testing.assert_array_equal(again.day_factor, f)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_clients": 0}, "n_clients"),
    ({"n_clients": 10, "rate_sigma": -1}, "rate_sigma"),
    ({"n_clients": 10, "growth": -1}, "growth"),
    ({"n_clients": 10, "mean_rate": 0}, "mean_rate"),
    ({"n_clients": 10, "duration": 1000}, "multiple"),
])
def test_population_bad_arguments(builtin, kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.synthesize(builtin, **kwargs)


def test_population_source_must_be_whole_days(builtin):
    with pytest.raises(ValueError, match="whole day"):
        P.synthesize(builtin.span(0, 3600), 10)
    with pytest.raises(ValueError, match="day boundary"):
        P.extend_horizon(builtin.span(600, 600 + 2 * DAY), 7 * DAY)
    with pytest.raises(ValueError, match="window boundaries"):
        P.synthesize(builtin, 10).span(100, 700)


# --------------------------------------------------------------------------- partitions
def _partition_run(pop, tmp, name, only=None, **kw):
    schema = trace_schema(pop.category, pop.fields, False, {"test": name})
    seen = []
    manifest = write_partitions(lambda a, b: generate(pop, None, 3 * DAY, seed=7, only=(a, b)), tmp / name, schema,
                                duration=3 * DAY, partition="day", only=only,
                                on_partition=lambda e, reused: seen.append((e["index"], reused)), **kw)
    return manifest, seen


def test_partition_alone_equals_the_same_partition_of_a_full_run(builtin, tmp_path):
    pop = P.synthesize(builtin, 5_000, mean_rate=20.0, duration=3 * DAY, seed=7)
    schema = trace_schema(pop.category, pop.fields, False, {"test": "x"})
    # the full run as one stream, split by the streaming writer
    write_trace(generate(pop, None, 3 * DAY, seed=7, chunk_bytes=8 << 20), tmp_path / "stream", schema,
                partition="day")
    schema_one = trace_schema(pop.category, pop.fields, False, {"test": "x"})
    write_partitions(lambda a, b: generate(pop, None, 3 * DAY, seed=7, only=(a, b)), tmp_path / "alone", schema_one,
                     duration=3 * DAY, partition="day", only=[1])
    a = (tmp_path / "stream" / "part-00001.parquet").read_bytes()
    b = (tmp_path / "alone" / "part-00001.parquet").read_bytes()
    assert len(a) > 100_000 and a == b
    # and the rows equal the whole table's rows of that day
    full = generate_table(pop, None, 3 * DAY, seed=7)
    t = full.column("timestamp").to_numpy()
    day1 = full.slice(int(np.searchsorted(t, DAY)), int(np.searchsorted(t, 2 * DAY) - np.searchsorted(t, DAY)))
    assert pq.read_table(tmp_path / "alone" / "part-00001.parquet").equals(day1)


def test_resume_redoes_only_missing_or_damaged_partitions(builtin, tmp_path):
    pop = P.synthesize(builtin, 2_000, mean_rate=5.0, duration=3 * DAY, seed=7)
    manifest, seen = _partition_run(pop, tmp_path, "r")
    assert manifest["complete"] and seen == [(0, False), (1, False), (2, False)]
    original = {p: (tmp_path / "r" / f"part-0000{p}.parquet").read_bytes() for p in range(3)}
    (tmp_path / "r" / "part-00000.parquet").unlink()
    with open(tmp_path / "r" / "part-00002.parquet", "r+b") as f:
        f.truncate(1000)
    manifest, seen = _partition_run(pop, tmp_path, "r")
    assert seen == [(0, False), (1, True), (2, False)]
    assert manifest["complete"]
    for p in range(3):
        assert (tmp_path / "r" / f"part-0000{p}.parquet").read_bytes() == original[p]
    assert read_trace(tmp_path / "r").num_rows == sum(e["rows"] for e in manifest["parts"])


def test_incomplete_partitioned_trace_is_refused_until_finished(builtin, tmp_path):
    pop = P.synthesize(builtin, 1_000, mean_rate=2.0, duration=3 * DAY, seed=7)
    manifest, seen = _partition_run(pop, tmp_path, "i", only=[2])
    assert not manifest["complete"] and seen == [(2, False)]
    with pytest.raises(ValueError, match="incomplete partitioned trace"):
        read_trace(tmp_path / "i")
    manifest, seen = _partition_run(pop, tmp_path, "i")
    assert manifest["complete"] and seen == [(0, False), (1, False), (2, True)]
    assert read_trace(tmp_path / "i").num_rows > 0


def test_partitions_of_a_different_trace_are_not_reused(builtin, tmp_path):
    pop = P.synthesize(builtin, 1_000, mean_rate=2.0, duration=3 * DAY, seed=7)
    _partition_run(pop, tmp_path, "d")
    schema = trace_schema(pop.category, pop.fields, False, {"test": "other"})
    with pytest.raises(ValueError, match="different trace"):
        write_partitions(lambda a, b: iter(()), tmp_path / "d", schema, duration=3 * DAY, partition="day")
    with pytest.raises(ValueError, match="out of range"):
        _partition_run(pop, tmp_path, "d", only=[3])


def test_only_must_lie_on_window_boundaries(builtin):
    with pytest.raises(ValueError, match="window boundaries"):
        generate(builtin, None, DAY, only=(100, 3600))


def test_cli_clients_partition_only_and_resume(tmp_path):
    """`--clients N --partition day --only 1` writes the same bytes as that day of the full run;
    re-running skips complete partitions; --from-trace-metadata rebuilds the population."""
    def run(*args):
        p = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "generate", "--pool", "builtin",
                            "--clients", "3000", "--mean-rate", "4", "--duration", "2d", "--seed", "11", "-q",
                            *args], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p
    run("--partition", "day", "-o", str(tmp_path / "full"))
    run("--partition", "day", "--only", "1", "-o", str(tmp_path / "one"))
    assert (tmp_path / "full/part-00001.parquet").read_bytes() == (tmp_path / "one/part-00001.parquet").read_bytes()
    meta = read_manifest(tmp_path / "full")["metadata"]
    assert meta["population"]["n_clients"] == 3000 and meta["mode"] == "renewal"
    t = read_trace(tmp_path / "full")
    assert t.num_rows / (2 * DAY) == pytest.approx(4.0, rel=0.05)
    p = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "generate", "--partition", "day",
                        "--from-trace-metadata", str(tmp_path / "full"), "-o", str(tmp_path / "full")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "kept 2 complete partition(s)" in p.stderr
    p = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "generate", "--only", "1", "-o",
                        str(tmp_path / "x.parquet")], capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "--only needs --partition" in p.stderr
