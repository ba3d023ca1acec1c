"""The NumPy twins' log / pow / cos / sin equal libm's, which the compiled samplers call.

NumPy's ufuncs may use their own SIMD code (np.log and np.power on AVX-512 hosts), off by one
ulp from libm on some inputs; the twins evaluate these four through ``math`` instead
(kernels/philox.py). These tests pin that property on inputs where it matters.
"""
import math

import numba
import numpy as np

from servegen_fast.kernels import philox as p

SEED = 0x5EED_0123_4567


def assert_bits_equal(x, y):
    """Bit-for-bit float64 equality (also tells -0.0 from 0.0)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert x.shape == y.shape
    bad = np.flatnonzero(x.view(np.uint64) != y.view(np.uint64))
    assert bad.size == 0, f"{bad.size} of {x.size} differ, e.g. {x.flat[bad[0]]!r} != {y.flat[bad[0]]!r}"


def assert_same_special(x, y):
    """Equal values, NaN where NaN (its sign bit carries no meaning), signed zeros alike."""
    np.testing.assert_array_equal(x, y)
    num = ~np.isnan(y)
    np.testing.assert_array_equal(np.signbit(x[num]), np.signbit(y[num]))


# Inputs on which NumPy 2.4's AVX-512 np.log / np.power round differently from
# libm (found on such a host; on others they are ordinary inputs).  The twins
# must give libm's result on them, as the compiled samplers do.
HARD_LOG = ["0x1.fb52aa2b858f5p-1", "0x1.a841e88b5a7dcp-1", "0x1.f8e6b46b9da7cp-1",
            "0x1.6794d89003b46p-1", "0x1.02f6e82949a56p-1", "0x1.12161e4f765fep-1"]
HARD_POW = [("0x1.c70fabd30b8f0p+1", 1 / 0.7), ("0x1.f26e21d5451c6p-3", 1 / 0.4),
            ("0x1.7a813ae179cf6p-2", 1 / 1.5), ("0x1.0e7c74b833141p+1", 1 / 0.05),
            ("0x1.506b07bf5c621p+1", 1 / 3.0), ("0x1.c78b7fc5c3b47p-2", 1 / 3.0)]
LOG, POW, COS, SIN = range(4)


@numba.njit(cache=False, error_model="numpy")
def _libm_njit(kind, x, y):
    """What the compiled samplers evaluate: numba's math.log / ** / math.cos / math.sin."""
    out = np.empty(x.size)
    for i in range(x.size):
        if kind == LOG:
            out[i] = math.log(x[i])
        elif kind == POW:
            out[i] = x[i] ** y[i]
        elif kind == COS:
            out[i] = math.cos(x[i])
        else:
            out[i] = math.sin(x[i])
    return out


def _twin(kind, x, y):
    return {LOG: lambda: p.log_np(x), POW: lambda: p.pow_np(x, y),
            COS: lambda: p.cos_np(x), SIN: lambda: p.sin_np(x)}[kind]()


def test_libm_twins_equal_libm_bit_for_bit():
    u1, u2 = p.uniform2_np(SEED, 7, 3, p.FIELD_IAT, np.arange(50_000))
    e = -np.log(u1)  # exponential draws: the pow bases of weibull
    shapes = np.repeat([0.05, 0.4, 0.7, 1.5, 3.0], e.size // 5)
    hard_x = np.array([float.fromhex(h) for h in HARD_LOG])
    hard_b = np.array([float.fromhex(b) for b, _ in HARD_POW])
    hard_y = np.array([y for _, y in HARD_POW])
    cases = {
        LOG: (np.concatenate([hard_x, u1, 1.0 + 8.0 * u2]), None),  # uniforms; gamma's v = (1 + cz)**3
        POW: (np.concatenate([hard_b, e, u2]), np.concatenate([hard_y, 1.0 / shapes, 1.0 / shapes])),
        COS: (2.0 * math.pi * u2, None),
        SIN: (2.0 * math.pi * u2, None),
    }
    for kind, (x, y) in cases.items():
        y = np.zeros_like(x) if y is None else y
        want = _libm_njit(kind, x, y)
        assert_bits_equal(_twin(kind, x, y), want)
        fn = (math.log, math.pow, math.cos, math.sin)[kind]  # CPython's math calls the same libm
        assert_bits_equal([fn(a, b) if kind == POW else fn(a) for a, b in zip(x, y)], want)


def test_libm_twins_special_values_and_shapes():
    inf, nan = math.inf, math.nan
    x = np.array([0.0, -0.0, -1.0, inf, nan, 1.0, 5e-324])
    assert_same_special(p.log_np(x), _libm_njit(LOG, x, x))
    b = np.array([0.0, -0.0, -1.5, 1e300, 2.0, 1.0, 0.0, 0.5, inf, nan])
    y = np.array([-1.0, -1.0, 0.5, 2.0, -2000.0, nan, 0.0, -inf, -0.5, 0.0])
    assert_same_special(p.pow_np(b, y), _libm_njit(POW, b, y))
    t = np.array([inf, -inf, nan, 0.0, -0.0, 1e22])
    for kind in (COS, SIN):
        assert_same_special(_twin(kind, t, t), _libm_njit(kind, t, t))
    # broadcasting and shapes as the ufuncs they replace
    assert p.pow_np(np.full((2, 1), 2.0), np.arange(3.0)).tolist() == [[1.0, 2.0, 4.0]] * 2
    assert p.log_np(1.0).shape == () and p.log_np(np.empty((0, 3))).shape == (0, 3)
