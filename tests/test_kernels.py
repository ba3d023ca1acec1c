"""Backends and keyed randomness: the NumPy reference and the Numba CPU kernels give identical
traces; the result does not depend on thread count, chunk size, global RNG state or on which
windows are generated together; different seeds give different traces."""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pytest

from servegen_fast.model.distributions import DistTableBuilder
from servegen_fast.sample.generate import generate, generate_table
from servegen_fast.model.fields import LAW_EXPONENTIAL, LAW_GAMMA, LAW_IDLE, LAW_WEIBULL, NO_DIST
from servegen_fast.model.pool import ClientPool, regular_grid

MODES = ("servegen", "renewal", "poisson")
CORRELATIONS = ("comonotone", "independent", 0.6)
LAWS = {"gamma": LAW_GAMMA, "weibull": LAW_WEIBULL, "exponential": LAW_EXPONENTIAL}
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- pools
def synth_pool(rate, law, cv, weibull_shape, category="language") -> ClientPool:
    """Synthetic pool: rate [C, W] (0 idle), law names [C, W], Gamma cv, Weibull shape."""
    rate = np.asarray(rate, dtype=np.float64)
    c, w = rate.shape
    code = np.vectorize(LAWS.__getitem__, otypes=[np.uint8])(np.broadcast_to(np.asarray(law), (c, w)))
    code = np.where(rate > 0, code, LAW_IDLE).astype(np.uint8)
    shape = np.where(code == LAW_GAMMA, 1.0 / cv ** 2, np.where(code == LAW_WEIBULL, weibull_shape, 1.0))
    shape = np.where(code == LAW_IDLE, 0.0, shape)
    wcv = math.sqrt(math.gamma(1 + 2 / weibull_shape) / math.gamma(1 + 1 / weibull_shape) ** 2 - 1)
    cv_col = np.where(code == LAW_GAMMA, cv, np.where(code == LAW_WEIBULL, wcv, np.where(code == LAW_IDLE, 0.0, 1.0)))
    scale = np.where(rate > 0, 1.0 / np.where(rate > 0, rate, 1.0), 0.0)  # unused by the generator
    start, wlen, widx, lidx = regular_grid(w, 600, 1200)  # two arrival windows per length window
    d = int(lidx[-1]) + 1
    b = DistTableBuilder()
    if category == "language":
        specs = {"input_tokens": lambda i: (np.arange(1, 200 + 50 * i) * 3.0, np.ones(199 + 50 * i)),
                 "output_tokens": lambda i: (np.arange(1, 100) * 2.0 + i, np.linspace(2, 1, 99))}
    elif category == "reason":
        specs = {"input_tokens": lambda i: (np.arange(1, 300) * 1.0, np.ones(299)),
                 "output_tokens": lambda i: (np.arange(1, 77) * 13.0, np.linspace(1, 3, 76)),
                 "reason_ratio": lambda i: (np.linspace(0.0, 1.0, 41), np.ones(41))}
    else:
        specs = {"text_tokens": lambda i: (np.arange(1, 300) * 1.0, np.ones(299)),
                 "image_tokens": lambda i: (np.array([0.0, 256.0, 577.0]), np.array([0.1, 0.6, 0.3])),
                 "audio_tokens": lambda i: (np.array([10.0, 20.0]), np.array([0.5, 0.5])),
                 "image_count": lambda i: (np.array([0.0, 1.0, 2.0, 5.0]), np.array([0.3, 0.3, 0.2, 0.2])),
                 "audio_count": lambda i: (np.array([0.0, 1.0]), np.array([0.9, 0.1])),
                 "output_tokens": lambda i: (np.arange(1, 77) * 13.0, np.linspace(1, 3, 76))}
    fields = tuple(specs)
    dist_id = np.full((c, d, len(fields)), NO_DIST, np.int32)
    for f, spec in enumerate(specs.values()):
        for i in range(c):
            for j in range(d):
                dist_id[i, j, f] = b.add(*spec(i + j))
    return ClientPool(category=category, model="synth", client_ids=np.arange(c, dtype=np.int64) * 5 + 100,
                      window_start=start, window_len=wlen, window_index=widx, length_index=lidx, rate=rate,
                      cv=cv_col, law=code, shape=shape, scale=scale, fields=fields, dist_id=dist_id,
                      dists=b.build(), window_size=600, length_window_size=1200)


def mixed_pool(category="language") -> ClientPool:
    """4 clients x 4 windows; Gamma with shape < 1 and > 1, Weibull and Exponential; idle windows."""
    rate = np.array([[0.4, 0.0, 0.3, 0.5],
                     [0.2, 0.3, 0.0, 0.1],
                     [0.0, 0.25, 0.35, 0.2],
                     [0.15, 0.1, 0.2, 0.0]])
    law = [["gamma", "weibull", "exponential", "gamma"],
           ["weibull", "gamma", "gamma", "exponential"],
           ["exponential", "gamma", "weibull", "gamma"],
           ["gamma", "exponential", "gamma", "weibull"]]
    cv = np.array([[2.5], [0.6], [1.3], [4.0]])
    return synth_pool(rate, law, cv, 0.7, category)


# (pool source, start, duration, aggregate rate): short spans with a truncated first window,
# small aggregate rates so the slow NumPy reference stays quick.
CASES = {
    "synthetic": ("synthetic-language", 150, 2250, None),
    "synthetic-mm": ("synthetic-multimodal", 150, 2250, None),
    "m-small": ("language/m-small", 36000 + 300, 900, 1.5),
    "mm-image": ("multimodal/mm-image", 36000 + 300, 900, 1.5),
    "deepseek-r1": ("reason/deepseek-r1", 36000 + 300, 900, 1.5),
}


@pytest.fixture(scope="module")
def pools(request):
    cache: dict = {}

    def get(name: str) -> ClientPool:
        if name not in cache:
            if name.startswith("synthetic-"):
                cache[name] = mixed_pool(name.split("-", 1)[1])
            else:
                cache[name] = request.getfixturevalue("real_pool")(name)
        return cache[name]
    return get


# --------------------------------------------------------------------------- reference vs cpu
@pytest.mark.parametrize("correlation", CORRELATIONS, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_numpy_reference_equals_cpu(pools, case, mode, correlation):
    name, start, duration, rate = CASES[case]
    pool = pools(name)
    kw = dict(start=start, seed=1234, mode=mode, correlation=correlation,
              include_reason_ratio=pool.category == "reason")
    ref = generate_table(pool, rate, duration, backend="numpy", **kw)
    cpu = generate_table(pool, rate, duration, backend="cpu", **kw)
    assert ref.num_rows > 300
    assert ref.schema.equals(cpu.schema, check_metadata=True)
    # identical integer columns and bit-identical timestamps (and reason ratios)
    assert ref.equals(cpu)
    if pool.category == "multimodal":
        assert pc.sum(pc.list_value_length(cpu.column("image_tokens"))).as_py() > 0


# --------------------------------------------------------------------------- invariances
def run(pool, **kw):
    kw.setdefault("seed", 77)
    return generate_table(pool, kw.pop("rate", None), kw.pop("duration", None), **kw)


@pytest.fixture(scope="module")
def big_span(pools):
    """m-small over 25 minutes from mid-window (4 windows), native rates: ~750k rows."""
    return pools("language/m-small"), dict(start=40_000, duration=1500)


@pytest.mark.parametrize("mode,correlation", [("servegen", 0.6), ("renewal", "independent"),
                                              ("poisson", "comonotone")])
def test_thread_count_invariance(big_span, mode, correlation):
    pool, span = big_span
    default = numba.get_num_threads()
    # On a one-core machine both runs use one thread; the subprocess test below still
    # compares 1 against 5 threads there.
    try:
        numba.set_num_threads(1)
        one = run(pool, mode=mode, correlation=correlation, **span)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = run(pool, mode=mode, correlation=correlation, **span)
    finally:
        numba.set_num_threads(default)
    assert one.num_rows > 100_000
    assert one.equals(many)


_SUBPROCESS = r"""
import sys, warnings
warnings.simplefilter("ignore")
import pyarrow.compute as pc
import pyarrow.ipc as ipc
from servegen_fast import read_servegen
from servegen_fast.sample.generate import generate_table
pool = read_servegen(sys.argv[1], "reason/deepseek-r1")
t = generate_table(pool, None, 3600, start=36000 + 200, seed=77, mode="renewal", correlation=0.6,
                   include_reason_ratio=True)
with ipc.new_file(sys.argv[2], t.schema) as w:
    w.write_table(t)
"""


def test_thread_count_invariance_subprocess(pools, servegen_root, tmp_path):
    # an odd thread count (more threads than cores) splits the work unevenly
    env = dict(os.environ, NUMBA_NUM_THREADS="5")
    out = tmp_path / "t.arrow"
    subprocess.run([sys.executable, "-c", _SUBPROCESS, str(servegen_root), str(out)], env=env, check=True,
                   cwd=ROOT, timeout=300)
    with ipc.open_file(out) as r:
        other = r.read_all()
    here = generate_table(pools("reason/deepseek-r1"), None, 3600, start=36000 + 200, seed=77, mode="renewal",
                          correlation=0.6, include_reason_ratio=True)
    assert here.num_rows > 10_000
    assert here.equals(other)


@pytest.mark.parametrize("mode", MODES)
def test_chunk_size_invariance(big_span, mode):
    pool, span = big_span
    whole = list(generate(pool, mode=mode, seed=78, **span))
    per_window = list(generate(pool, mode=mode, seed=78, chunk_bytes=1, **span))
    ref = pa.Table.from_batches(whole)
    # a budget of ~60% of the planned rows (renewal/poisson plan 1.1 x the expected count):
    # some chunk holds two windows, none holds all four
    budget_rows = int(0.6 * ref.num_rows * (1.0 if mode == "servegen" else 1.1))
    some = list(generate(pool, mode=mode, seed=78, chunk_bytes=96 * budget_rows, **span))
    assert len(whole) == 1 and len(per_window) == 4 and 1 < len(some) < 4
    assert pa.Table.from_batches(per_window).equals(ref)
    assert pa.Table.from_batches(some).equals(ref)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_chunk_size_invariance_multimodal(pools, backend):
    pool = pools("synthetic-multimodal")
    w = 4 if backend == "cpu" else 2  # the reference is slow with list fields
    a = list(generate(pool, None, w * 600, seed=79, mode="renewal", backend=backend))
    b = list(generate(pool, None, w * 600, seed=79, mode="renewal", backend=backend, chunk_bytes=1))
    assert len(a) == 1 and len(b) == w
    assert pa.Table.from_batches(a).equals(pa.Table.from_batches(b))


@pytest.mark.parametrize("mode", MODES)
def test_window_generated_alone_matches(pools, mode):
    # every draw is keyed by (seed, client, window, field, index): a whole window generated on
    # its own gives the same rows as inside a longer span (timestamps shifted by the span start)
    pool = pools("synthetic-language")
    full = run(pool, mode=mode, correlation=0.6)
    alone = run(pool, mode=mode, correlation=0.6, start=1200, duration=600)
    ts = full.column("timestamp").to_numpy()
    part = full.filter(pa.array((ts >= 1200) & (ts < 1800)))
    assert alone.num_rows == part.num_rows > 50
    assert alone.drop_columns(["timestamp"]).equals(part.drop_columns(["timestamp"]))
    # start + t differs from (start − 1200) + t by float rounding only: 1e-9 s
    np.testing.assert_allclose(alone.column("timestamp").to_numpy() + 1200, part.column("timestamp").to_numpy(),
                               rtol=0, atol=1e-9)


def test_global_random_state_isolation(pools):
    pool = pools("synthetic-multimodal")
    np.random.seed(1)
    random.seed(1)
    a = run(pool, mode="renewal", correlation=0.6)
    np.random.seed(987654)
    np.random.random(1000)
    random.seed(5)
    random.random()
    np.random.default_rng(3).random(10)
    b = run(pool, mode="renewal", correlation=0.6)
    c = run(pool, mode="renewal", correlation=0.6, backend="numpy")
    assert a.equals(b) and a.equals(c)


def test_same_seed_same_trace_different_seed_different(pools):
    pool = pools("synthetic-language")
    seeds = (0, 1, 2 ** 32, 2 ** 63 + 5, 2 ** 64 - 1)
    tables = [run(pool, seed=s, mode="servegen", correlation="independent") for s in seeds]
    assert run(pool, seed=2 ** 63 + 5, mode="servegen", correlation="independent").equals(tables[3])
    for i in range(len(seeds)):
        for j in range(i + 1, len(seeds)):
            a, b = tables[i], tables[j]
            # servegen mode: same counts per window, different times and lengths
            assert a.num_rows == b.num_rows
            ta, tb = a.column("timestamp").to_numpy(), b.column("timestamp").to_numpy()
            assert np.mean(ta == tb) < 0.01, (seeds[i], seeds[j])
            ia, ib = a.column("input_tokens").to_numpy(), b.column("input_tokens").to_numpy()
            assert np.mean(ia == ib) < 0.2, (seeds[i], seeds[j])  # chance agreement ≈ 1/200 – 1/350
    r0 = run(pool, seed=0, mode="renewal")
    r1 = run(pool, seed=1, mode="renewal")
    assert not r0.equals(r1)


def _window_times(rng, sizes, layout) -> np.ndarray:
    """Arrival times of consecutive 600 s windows holding `sizes` arrivals each, laid out as
    uniform, clustered (most mass in a tiny interval: buckets of hundreds), ties or single."""
    t = []
    for w, n in enumerate(sizes):
        if layout == "uniform":
            x = rng.uniform(0, 600, n)
        elif layout == "clustered":
            x = np.where(rng.random(n) < 0.8, 300 + rng.random(n) * 1e-6, rng.uniform(0, 600, n))
        elif layout == "ties":
            x = rng.integers(0, 5, n).astype(np.float64)
        else:
            x = np.full(n, 17.0)
        t.append(600.0 * w + x)
    return np.concatenate(t)


@pytest.mark.parametrize("layout", ["uniform", "clustered", "ties", "single"])
def test_window_order_matches_stable_argsort(layout):
    """cpu.window_order's bucket sort equals a stable argsort per window, including buckets
    large enough for its merge-sort fallback (clustered times) and exact ties."""
    from servegen_fast.kernels import cpu, reference
    sizes = [0, 1, 2, 500, 3000, 0, 40]
    t = _window_times(np.random.default_rng(7), sizes, layout)
    unit_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    first_unit = np.arange(len(sizes) + 1, dtype=np.int64)
    got = cpu.window_order(t, unit_offsets, first_unit)
    np.testing.assert_array_equal(got, reference.window_order(t, unit_offsets, first_unit))
    assert np.all(np.diff(t[got]) >= 0)



@pytest.mark.parametrize("layout", ["uniform", "clustered", "ties", "single"])
@pytest.mark.parametrize("sizes", [[80_000], [0, 70_000, 3, 90_000]])
def test_window_order_splits_large_windows_the_same(layout, sizes):
    """A chunk of few windows sorts each large one in parallel by time ranges (a fleet's chunk):
    the same permutation as a stable argsort, whatever the thread count."""
    import numba
    from servegen_fast.kernels import config, cpu, reference
    assert max(sizes) >= config.SPLIT_WINDOW
    t = _window_times(np.random.default_rng(11), sizes, layout)
    unit_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    first_unit = np.arange(len(sizes) + 1, dtype=np.int64)
    want = reference.window_order(t, unit_offsets, first_unit)
    threads = numba.get_num_threads()
    try:
        for k in sorted({1, threads}):
            numba.set_num_threads(k)
            np.testing.assert_array_equal(cpu.window_order(t, unit_offsets, first_unit), want)
    finally:
        numba.set_num_threads(threads)


def test_compiled_renewal_params_equal_the_numpy_twin():
    """plan.renewal_params (compiled but for the Weibull log Γ) equals its NumPy twin bit for
    bit: every law, cv at and below the floor, NaN cv, extreme shapes and rates."""
    from servegen_fast.model.fields import LAW_EXPONENTIAL, LAW_GAMMA, LAW_WEIBULL
    from servegen_fast.sample.plan import renewal_params, renewal_params_numpy
    rng = np.random.default_rng(5)
    n = 20_000
    law = rng.choice([LAW_GAMMA, LAW_WEIBULL, LAW_EXPONENTIAL], n)
    cv = np.exp(rng.uniform(-9, 3, n))
    cv[:50] = 1e-3
    cv[50:60] = np.nan
    shape = np.exp(rng.uniform(-3, 4, n))
    rate = np.exp(rng.uniform(-12, 8, n))
    for args in ((law, shape, cv, rate), (np.full(n, LAW_EXPONENTIAL), shape, cv, rate), (law[:0], shape[:0],
                                                                                          cv[:0], rate[:0])):
        got, want = renewal_params(*args), renewal_params_numpy(*args)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.view(np.int64), w.view(np.int64))


@pytest.mark.parametrize("corr", [(0, 1.0), (1, 0.0), (2, 0.4)])
def test_fill_rows_is_fill_base_then_gather(corr):
    """cpu.fill_rows (values written straight to their time-ordered row) equals fill_base then
    gather_rows, and the NumPy twin; empty units, a shuffled order, and no rows at all."""
    from servegen_fast.io.pool_file import open_pool
    from servegen_fast.kernels import codes, cpu, reference
    assert (codes.CORR_COMONOTONE, codes.CORR_INDEPENDENT, codes.CORR_COPULA) == (0, 1, 2)
    d = open_pool("builtin").dists
    guide, goff = d.guide()
    tables = (d.values, d.cdf, d.offsets, guide, goff)
    rng = np.random.default_rng(9)
    for n_units in (0, 300):
        counts = rng.integers(0, 4, n_units)
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        n = int(offsets[-1])
        client = rng.integers(0, 10_000, n_units).astype(np.uint32)
        window = rng.integers(0, 100, n_units).astype(np.uint32)
        dist = rng.integers(0, len(d.offsets) - 1, (n_units, 2)).astype(np.int64)
        t = rng.uniform(0, 600, n)
        perm = rng.permutation(n).astype(np.int64)
        seed = np.uint64(2 ** 63 + 5)
        got = cpu.fill_rows(*corr, seed, offsets, client, window, dist, *tables, perm, t)
        vals = cpu.fill_base(*corr, seed, offsets, client, window, dist, *tables, np.empty((n, 2)))
        slot_unit = np.repeat(np.arange(n_units, dtype=np.int64), counts)
        want = cpu.gather_rows(perm, slot_unit, client, t, vals)
        ref = reference.fill_rows(*corr, seed, offsets, client, window, dist, *tables, perm, t)
        for g, w, r in zip(got, want, ref):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
            np.testing.assert_array_equal(g, r)

# --------------------------------------------------------------------------- count and fill in one walk
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_renewal_arrivals_keep_what_the_fill_would_draw(backend):
    """renewal_arrivals' counts are count_renewal's, and fill_arrivals gives the same times
    whether a unit is copied from the kept ones or drawn again: blocks whose room is empty,
    too small (part copied, part drawn), or ample; the last block is partial."""
    from servegen_fast.kernels import cpu, reference
    from servegen_fast.kernels.codes import MODE_RENEWAL, ROOM_BLOCK
    from servegen_fast.sample.plan import renewal_params

    kern = reference if backend == "numpy" else cpu
    n = 3 * ROOM_BLOCK + 5
    rng = np.random.default_rng(4)
    law = np.array([LAW_GAMMA, LAW_WEIBULL, LAW_EXPONENTIAL, LAW_GAMMA] * n, np.int64)[:n]
    cv = rng.uniform(0.4, 3.0, n)
    shape = np.where(law == LAW_WEIBULL, rng.uniform(0.4, 2.0, n), 1.0)
    rate = rng.uniform(0.002, 0.02, n)
    k, scale = renewal_params(law, shape, cv, rate)
    client = np.arange(n, dtype=np.uint32) * 7
    window = np.full(n, 12, np.uint32)
    start = np.full(n, 7200.0)
    length = np.full(n, 600.0)
    seed = np.uint64(11)
    counts = kern.count_renewal(seed, client, window, length, law, k, scale)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    want = np.empty(offsets[-1])
    kern.fill_arrivals(MODE_RENEWAL, seed, client, window, start, length, law, k, scale, offsets, want)
    block_total = np.add.reduceat(counts, np.arange(4) * ROOM_BLOCK)
    room = np.array([0, block_total[1] // 2, block_total[2] + 3, block_total[3]])
    room_off = np.zeros(5, np.int64)
    np.cumsum(room, out=room_off[1:])
    got_counts, first = kern.renewal_arrivals(seed, client, window, start, length, law, k, scale, room_off)
    np.testing.assert_array_equal(got_counts, counts)
    assert block_total[1] > 4  # a part of block 1 is copied, the rest drawn
    got = np.full(offsets[-1], np.nan)
    kern.fill_arrivals(MODE_RENEWAL, seed, client, window, start, length, law, k, scale, offsets, got, room_off, first)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("stream", [1, 2])
@pytest.mark.parametrize("mode", MODES)
def test_arrival_streams_equal_across_backends_and_chunk_sizes(pools, stream, mode):
    """Each arrival stream (kernels/codes.py) gives the same bytes on numpy and cpu and for any
    chunk size; the two streams differ (the pool has Gamma windows)."""
    pool = pools("synthetic-language")
    kw = dict(start=150, seed=99, mode=mode, arrival_stream=stream)
    ref = generate_table(pool, None, 2250, backend="numpy", **kw)
    cpu = generate_table(pool, None, 2250, backend="cpu", **kw)
    small = generate_table(pool, None, 2250, backend="cpu", chunk_bytes=96 * 50, **kw)
    assert ref.num_rows > 300
    assert ref.equals(cpu) and small.equals(cpu)
    other = generate_table(pool, None, 2250, backend="cpu", **{**kw, "arrival_stream": 3 - stream})
    assert not other.column("timestamp").equals(cpu.column("timestamp"))


def test_unknown_arrival_stream_is_a_clear_error(pools):
    with pytest.raises(ValueError, match="arrival_stream must be one of"):
        generate(pools("synthetic-language"), None, 600, arrival_stream=3)
