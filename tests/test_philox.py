"""Tests for the counter-based Philox4x32-10 samplers (kernels/philox.py)."""

import math
import os
import random
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from scipy import stats

from servegen_fast.kernels import philox as p

KAT = [  # Random123 kat_vectors, philox4x32-10: (ctr, key, expected)
    ((0, 0, 0, 0), (0, 0),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2,
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

SEED = 0x5EED_0123_4567  # > 32 bits so both key words matter
N_STAT = 30_000
P_MIN = 1e-3

NORMAL, EXPONENTIAL, WEIBULL, GAMMA, UNIFORM, UNIFORM2ND = range(6)


# ---------------------------------------------------------------- helpers
@numba.njit(cache=False)
def _draw(kind, shape, seed, client, window, field, index):
    """One sampler over per-element (shape, client, window, index) arrays."""
    n = index.size
    out = np.empty(n)
    for i in range(n):
        c, w, j = client[i], window[i], index[i]
        if kind == NORMAL:
            out[i] = p.normal(seed, c, w, field, j)
        elif kind == EXPONENTIAL:
            out[i] = p.exponential(seed, c, w, field, j)
        elif kind == WEIBULL:
            out[i] = p.weibull(shape[i], seed, c, w, field, j)
        elif kind == GAMMA:
            out[i] = p.gamma(shape[i], seed, c, w, field, j)
        elif kind == UNIFORM:
            out[i] = p.uniform(seed, c, w, field, j)
        else:
            out[i] = p.uniform2(seed, c, w, field, j)[1]
    return out


def draw_at(kind, shape, seed, client, window, field, index):
    """``_draw`` with scalar-or-array shape, always one compiled signature."""
    index = np.ascontiguousarray(index, dtype=np.int64)
    shape = np.broadcast_to(shape, index.shape).astype(np.float64)  # writable
    return _draw(kind, shape, seed, np.ascontiguousarray(client, np.int64),
                 np.ascontiguousarray(window, np.int64), field, index)


@numba.njit(cache=False)
def _words(seed, client, window, field, index, attempt):
    out = np.empty((index.size, 4), dtype=np.uint64)
    for i in range(index.size):
        w = p.philox_block(seed, client[i], window[i], field, index[i], attempt)
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = w
    return out


def draw(kind, n=N_STAT, shape=1.0, seed=SEED, client=7, window=3,
         field=p.FIELD_LENGTH, start=0, index=None):
    """numba draws for indices ``start..start+n`` (or ``index``)."""
    if index is None:
        index = np.arange(start, start + n, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    cl = np.full(index.size, client, dtype=np.int64)
    wi = np.full(index.size, window, dtype=np.int64)
    return draw_at(kind, shape, seed, cl, wi, field, index)


def random_counters(n, rng_seed=0):
    """Arbitrary 32-bit client/window/index triples (test inputs only)."""
    rng = np.random.default_rng(rng_seed)
    return tuple(rng.integers(0, 2**32, n, dtype=np.int64) for _ in range(3))


def max_ulps(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = np.spacing(np.maximum(np.abs(a), np.abs(b)))
    return float(np.max(np.abs(a - b) / scale)) if a.size else 0.0


def ks(x, dist, *args):
    return stats.kstest(x, dist, args=args).pvalue


# ---------------------------------------------------- Philox known answers
@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_kat_njit(ctr, key, expected):
    assert tuple(int(w) for w in p.philox4x32_10(*ctr, *key)) == expected


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_kat_pure_python(ctr, key, expected):
    assert tuple(int(w) for w in p.PY.philox4x32_10(*ctr, *key)) == expected


def test_kat_numpy():
    cols = [np.array(col, dtype=np.uint64)
            for col in zip(*[c + k for c, k, _ in KAT])]
    out = p.philox4x32_10_np(*cols)
    assert all(w.dtype == np.uint32 for w in out)
    np.testing.assert_array_equal(np.stack(out, axis=1),
                                  np.array([e for _, _, e in KAT], np.uint32))


@pytest.mark.parametrize("seed", [0, 1, SEED, 2**63 + 12345, 2**64 - 1])
def test_counter_layout(seed):
    client, window, field, index, attempt = 0xDEADBEEF, 77, 5, 123456, 3
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    c1 = field | (attempt << 8)
    want = tuple(int(w) for w in p.philox4x32_10(index, c1, window, client,
                                                 k0, k1))
    # numba dispatch types Python ints as int64: pass seeds >= 2**63 as uint64
    got = p.philox_block(np.uint64(seed), client, window, field, index, attempt)
    assert tuple(int(w) for w in got) == want
    got_np = p.philox_block_np(seed, client, window, field, index, attempt)
    assert tuple(int(w) for w in got_np) == want
    assert p.uniform2(np.uint64(seed), client, window, field, index) == \
        p.uniform2_attempt(np.uint64(seed), client, window, field, index, 0)


def test_u53_edges():
    tiny, top = 2.0**-53, 0xFFFFFFFF
    assert p.u53(0, 0) == tiny and p.PY.u53(0, 0) == tiny
    assert p.u53(top, top) == 1.0 and p.PY.u53(top, top) == 1.0
    assert p.u53(1 << 5, 0) == 2.0**-27 + tiny  # a's 27 bits are the high part
    assert p.u53(0, 1 << 6) == 2 * tiny         # b's 26 bits are the low part
    np.testing.assert_array_equal(
        p.u53_np(np.array([0, top, 1 << 5]), np.array([0, top, 0])),
        [tiny, 1.0, 2.0**-27 + tiny])


# ------------------------------------------------ NumPy vs numba vs Python
def test_numpy_numba_words_and_uniforms_identical():
    cl, wi, ix = random_counters(100_000)
    for attempt in (0, 1, 77):
        words = _words(SEED, cl, wi, 9, ix, attempt)
        words_np = p.philox_block_np(SEED, cl, wi, 9, ix, attempt)
        np.testing.assert_array_equal(words, np.stack(words_np, axis=1))
    u1, u2 = p.uniform2_np(SEED, cl, wi, 9, ix)
    np.testing.assert_array_equal(draw_at(UNIFORM, 1.0, SEED, cl, wi, 9, ix), u1)
    np.testing.assert_array_equal(draw_at(UNIFORM2ND, 1.0, SEED, cl, wi, 9, ix),
                                  u2)
    np.testing.assert_array_equal(p.uniform_np(SEED, cl, wi, 9, ix), u1)


# The NumPy twins match numba bit for bit: both call libm for log / pow / cos /
# sin (tests/test_philox_libm.py).  Not so normal_np (NumPy's SIMD log on
# AVX-512, see its docstring) and ``_gamma_by_the_docs`` below (another
# rounding order, amplified by the formulas near cancellations): those are
# held to 2**-44 relative (~256 ulp) plus 2**-48 absolute.
RTOL, ATOL = 2.0**-44, 2.0**-48

FLOAT_CASES = [(NORMAL, 0.0), (EXPONENTIAL, 0.0), (WEIBULL, 0.4),
               (WEIBULL, 1.5)] + [(GAMMA, a) for a in (0.05, 0.3, 1.0, 4.0, 50.0)]


def _np_sampler(kind, shape, seed, cl, wi, field, ix):
    if kind == NORMAL:
        return p.normal_np(seed, cl, wi, field, ix)
    if kind == EXPONENTIAL:
        return p.exponential_np(seed, cl, wi, field, ix)
    if kind == WEIBULL:
        return p.weibull_np(shape, seed, cl, wi, field, ix)
    return p.gamma_np(shape, seed, cl, wi, field, ix)


@pytest.mark.parametrize("kind,shape", FLOAT_CASES)
def test_numpy_numba_floats_agree(kind, shape):
    cl, wi, ix = random_counters(100_000, rng_seed=kind)
    x = draw_at(kind, shape, SEED, cl, wi, 2, ix)
    y = _np_sampler(kind, shape, SEED, cl, wi, 2, ix)
    assert np.all(np.isfinite(x))
    if kind == NORMAL:  # normal_np keeps NumPy's ufuncs (host-side population draws)
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_array_equal(x.view(np.uint64), y.view(np.uint64))  # bit for bit


def test_gamma_np_broadcasts_over_shapes():
    cl, wi, ix = random_counters(20_000, rng_seed=11)
    shapes = np.random.default_rng(12).uniform(0.02, 20.0, ix.size)
    x = draw_at(GAMMA, shapes, SEED, cl, wi, 4, ix)
    y = p.gamma_np(shapes, SEED, cl, wi, 4, ix)
    np.testing.assert_array_equal(x.view(np.uint64), y.view(np.uint64))  # bit for bit
    # scalar index broadcast against a shape vector
    y2 = p.gamma_np(shapes[:5].reshape(5, 1), SEED, 1, 2, 4, np.arange(3))
    assert y2.shape == (5, 3)
    assert y2[4, 2] == p.gamma(shapes[4], SEED, 1, 2, 4, 2)


@pytest.mark.parametrize("name,args", [
    ("uniform", ()), ("normal", ()), ("exponential", ()), ("weibull", (0.7,)),
    ("gamma", (0.3,)), ("gamma", (4.0,))])
def test_pure_python_matches_njit(name, args):
    for j in range(40):
        key = (SEED, 5, 6, p.FIELD_IAT, j)
        assert getattr(p.PY, name)(*args, *key) == \
            getattr(p, name)(*args, *key)


def _gamma_by_the_docs(a, seed, client, window, field, index):
    """Marsaglia-Tsang exactly as documented: slots 2t / 2t+1, boost slot 1."""
    base = a + 1.0 if a < 1.0 else a
    d = base - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    for t in range(1000):
        u1, u2 = p.uniform2_attempt(seed, client, window, field, index, 2 * t)
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        v = 1.0 + c * z
        if v <= 0.0:
            continue
        v = v * v * v
        ua = p.uniform2_attempt(seed, client, window, field, index, 2 * t + 1)[0]
        if ua < 1.0 - 0.0331 * (z * z) * (z * z) or \
                math.log(ua) < 0.5 * z * z + d * (1.0 - v + math.log(v)):
            g = d * v
            if a < 1.0:
                g *= p.uniform2_attempt(seed, client, window, field, index,
                                        1)[1] ** (1.0 / a)
            return g
    raise AssertionError("no acceptance")


@pytest.mark.parametrize("a", [0.05, 0.3, 1.0, 4.0])
def test_gamma_counter_usage_matches_docs(a):
    for j in range(300):
        got = p.gamma(a, SEED, 1, 2, p.FIELD_MM_COUNT, j)
        want = _gamma_by_the_docs(a, SEED, 1, 2, p.FIELD_MM_COUNT, j)
        assert got == pytest.approx(want, rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_gamma_invalid_shape_is_nan(bad):
    assert math.isnan(p.gamma(bad, SEED, 0, 0, 0, 0))
    assert math.isnan(p.PY.gamma(bad, SEED, 0, 0, 0, 0))
    assert np.isnan(p.gamma_np(np.array([bad, 2.0]), SEED, 0, 0, 0, 0)[0])


# -------------------------------------------------------------- uniforms
def test_uniform_range_moments_ks():
    for kind in (UNIFORM, UNIFORM2ND):
        u = draw(kind, n=50_000)
        assert u.min() > 0.0 and u.max() <= 1.0
        n = u.size
        assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
        assert abs(u.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
        assert ks(u, "uniform") > P_MIN


# ---------------------------------------------------------- distributions
def test_normal_ks():
    z = draw(NORMAL)
    assert ks(z, "norm") > P_MIN
    assert abs(z.mean()) < 5 / math.sqrt(z.size)


def test_exponential_ks():
    x = draw(EXPONENTIAL)
    assert x.min() >= 0.0
    assert ks(x, "expon") > P_MIN


@pytest.mark.parametrize("k", [0.4, 1.5])
def test_weibull_ks(k):
    assert ks(draw(WEIBULL, shape=k), "weibull_min", k) > P_MIN


@pytest.mark.parametrize("a", [0.05, 0.3, 1.0, 4.0, 50.0])
def test_gamma_ks_and_moments(a):
    x = draw(GAMMA, shape=a, field=p.FIELD_MM_ITEM)
    n = x.size
    assert np.all(x >= 0.0) and np.all(np.isfinite(x))
    # KS is invariant under monotone maps, so this also covers log(x) for the
    # tiny shapes where almost all mass sits near 0.
    assert ks(x, "gamma", a) > P_MIN
    # mean = var = a; sd(mean) = sqrt(a/n), sd(var) ~ sqrt((2a^2 + 6a)/n)
    assert abs(x.mean() - a) < 5 * math.sqrt(a / n)
    assert abs(x.var() - a) < 5 * math.sqrt((2 * a * a + 6 * a) / n)


# ---------------------------------------------------- keys and determinism
@pytest.mark.parametrize("change", [
    dict(seed=SEED + 1), dict(seed=SEED + (1 << 32)), dict(client=8),
    dict(window=4), dict(field=p.FIELD_IAT), dict(start=1)])
def test_streams_independent(change):
    n = 20_000
    base = draw(UNIFORM, n=n)
    other = draw(UNIFORM, n=n, **change)
    assert np.mean(base == other) < 1e-3
    assert abs(np.corrcoef(base, other)[0, 1]) < 5 / math.sqrt(n)


def test_attempt_slots_and_block_halves_independent():
    n = 20_000
    cl, wi = np.full(n, 7, np.int64), np.full(n, 3, np.int64)
    ix = np.arange(n, dtype=np.int64)
    a0 = p.uniform2_attempt_np(SEED, cl, wi, 1, ix, 0)
    a1 = p.uniform2_attempt_np(SEED, cl, wi, 1, ix, 1)
    for x, y in [(a0[0], a0[1]), (a0[0], a1[0]), (a0[1], a1[1])]:
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / math.sqrt(n)


def test_deterministic_and_order_free():
    idx = np.arange(5_000, dtype=np.int64)
    for kind, shape in [(NORMAL, 0.0), (GAMMA, 0.3), (GAMMA, 4.0)]:
        fwd = draw(kind, shape=shape, index=idx)
        np.testing.assert_array_equal(draw(kind, shape=shape, index=idx), fwd)
        rev = draw(kind, shape=shape, index=idx[::-1])
        np.testing.assert_array_equal(rev[::-1], fwd)
        chunks = np.concatenate([draw(kind, shape=shape, index=c)
                                 for c in np.array_split(idx, 7)])
        np.testing.assert_array_equal(chunks, fwd)


def test_global_rngs_do_not_matter():
    cl, wi, ix = random_counters(2_000, rng_seed=5)
    first = (draw_at(GAMMA, 0.3, SEED, cl, wi, 0, ix),
             p.gamma_np(0.3, SEED, cl, wi, 0, ix), p.normal(SEED, 1, 2, 3, 4))
    np.random.seed(123)
    random.seed(1)
    np.random.random(17)
    random.random()
    second = (draw_at(GAMMA, 0.3, SEED, cl, wi, 0, ix),
              p.gamma_np(0.3, SEED, cl, wi, 0, ix), p.normal(SEED, 1, 2, 3, 4))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------ same source as CUDA device code
_SIM_SCRIPT = textwrap.dedent("""
    import numpy as np
    from numba import cuda
    from servegen_fast.kernels import philox as p
    from servegen_fast.kernels import stream2
    D = p.make_samplers(cuda.jit(device=True))
    S2 = stream2.make_stream2(cuda.jit(device=True), D)

    @cuda.jit
    def kern(out, shape):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i, 0] = D.uniform(99, 1, 2, 3, i)
            out[i, 1] = D.normal(99, 1, 2, 3, i)
            out[i, 2] = D.gamma(shape, 99, 1, 2, 3, i)
            out[i, 3] = D.weibull(0.4, 99, 1, 2, 3, i)
            out[i, 4] = S2.gamma2(shape, 99, 1, 2, 3, i)

    out = np.zeros((40, 5))
    kern[2, 32](out, 0.3)
    ix = np.arange(40)
    ref = np.stack([p.uniform_np(99, 1, 2, 3, ix), p.normal_np(99, 1, 2, 3, ix),
                    p.gamma_np(0.3, 99, 1, 2, 3, ix),
                    p.weibull_np(0.4, 99, 1, 2, 3, ix), stream2.gamma2_np(0.3, 99, 1, 2, 3, ix)], axis=1)
    assert np.array_equal(out, ref), np.abs(out - ref).max()
    print("SIM-OK")
""")


def test_same_source_under_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join(x for x in sys.path if x))
    res = subprocess.run([sys.executable, "-c", _SIM_SCRIPT], env=env,
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0 and "No module named 'numba.cuda'" in res.stderr:
        pytest.skip("numba.cuda (simulator) not available")
    assert res.returncode == 0, res.stderr
    assert "SIM-OK" in res.stdout
