"""Counter-based keyed randomness (Philox4x32-10) shared by all backends.

Every random number is a pure function of ``(seed, client, window, field,
index)``; there is no sequential RNG state anywhere, so results do not depend
on thread count, chunking, evaluation order or device.

Counter layout (one Philox4x32-10 block = four 32-bit words)::

    key     k0 = seed & 0xFFFFFFFF          k1 = (seed >> 32) & 0xFFFFFFFF
    counter c0 = index   (draw index within one (client, window, field) stream)
            c1 = field | (attempt << 8)     field < 256, attempt < 2**24
            c2 = window
            c3 = client

``seed`` is a non-negative 64-bit integer (pass seeds >= 2**63 to the numba
functions as ``np.uint64``: numba types Python ints as int64); ``client``,
``window`` and ``index`` are reduced modulo 2**32.  Field ids 0..15 are
reserved for the ``FIELD_*`` constants below.  ``attempt`` is 0 for every
plain sampler; only rejection samplers (gamma) use other attempt slots.

Uniform convention: two words (a, b) make one double in (0, 1] with 53 random
bits, ``u = ((a >> 5) * 2**26 + (b >> 6) + 1) * 2**-53``.  It is never 0 (so
``log(u)`` is always finite) and equals 1.0 with probability 2**-53.  Words
(0, 1) of a block give u1, words (2, 3) give u2.  All of this is exact integer
/ power-of-two arithmetic, hence bit-identical on every backend.

Samplers (scale 1):

* normal:       Box-Muller on one block, ``sqrt(-2 log u1) * cos(2 pi u2)``.
* exponential:  ``-log(u1)``.
* weibull(k):   ``(-log u1) ** (1/k)`` (inverse transform).
* gamma(a):     Marsaglia-Tsang.  Attempt ``t = 0, 1, ...`` uses the block at
  attempt slot ``2t`` for the Box-Muller normal ``z`` (from its u1, u2) and
  the block at slot ``2t + 1`` for the acceptance uniform (its u1).  For
  ``a < 1`` the result is ``G(a + 1) * U ** (1/a)`` with ``U`` = u2 of the
  slot-1 block (words 2, 3; never used for anything else).  At most
  ``GAMMA_MAX_ATTEMPTS`` attempts (then NaN; never reached in practice);
  ``a <= 0`` or NaN gives NaN.
* gamma2(a):    arrival stream 2's Gamma, one block per attempt: kernels/stream2.py.

Backends built from the same source:

* ``make_samplers(jit)`` builds all scalar samplers with a decorator, e.g.
  ``numba.njit`` (done here, exported as module-level names),
  ``numba.cuda.jit(device=True)``, or the identity (pure Python, ``PY``).
  The scalar source uses only integer/float arithmetic, tuples and ``math``.
* ``*_np`` functions are vectorized NumPy references (broadcasting inputs).
"""

from __future__ import annotations

import math
import types

import numpy as np

from . import config

__all__ = [
    "FIELD_IAT", "FIELD_LENGTH", "FIELD_COPULA", "FIELD_MM_COUNT",
    "FIELD_MM_ITEM", "FIELD_RENEWAL_START", "FIELD_POPULATION", "GAMMA_MAX_ATTEMPTS",
    "make_samplers", "PY",
    "philox4x32_10", "philox_block", "u53", "uniform2_attempt", "uniform2",
    "uniform", "normal", "exponential", "weibull", "gamma",
    "philox4x32_10_np", "philox_block_np", "u53_np", "uniform2_attempt_np",
    "uniform2_np", "uniform_np", "normal_np", "exponential_np",
    "weibull_np", "gamma_np", "log_np", "pow_np", "cos_np", "sin_np",
]

# Field ids (counter word c1, low 8 bits); 0..15 reserved for the package.
FIELD_IAT = 0
FIELD_LENGTH = 1
FIELD_COPULA = 2
FIELD_MM_COUNT = 3
FIELD_MM_ITEM = 4
FIELD_RENEWAL_START = 5
FIELD_POPULATION = 6  # population parameters (servegen_fast.model.population)

GAMMA_MAX_ATTEMPTS = 1 << 20  # safety valve; uses attempt slots < 2**21

# Typed constants: numba freezes np.uint64 globals as uint64 literals, which
# keeps all integer arithmetic unsigned 64-bit (int64*uint64 would go float).
_MASK32 = np.uint64(0xFFFFFFFF)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_S32 = np.uint64(32)
_S8 = np.uint64(8)
_S6 = np.uint64(6)
_S5 = np.uint64(5)
_TWO_POW_26 = 67108864.0
_TWO_POW_M53 = 1.0 / 9007199254740992.0  # 2**-53, exact
_TWO_PI = 2.0 * math.pi
_ONE_THIRD = 1.0 / 3.0

_jit = config.njit_inline


def make_samplers(jit):
    """Build the scalar samplers with decorator ``jit``; returns a namespace.

    ``jit`` may be ``numba.njit``-like, ``numba.cuda.jit(device=True)``-like
    or ``lambda f: f`` (pure Python on NumPy scalars).  Functions that call
    each other are closed over their compiled siblings.
    """

    @jit
    def philox4x32_10(c0, c1, c2, c3, k0, k1):
        x0 = np.uint64(c0) & _MASK32
        x1 = np.uint64(c1) & _MASK32
        x2 = np.uint64(c2) & _MASK32
        x3 = np.uint64(c3) & _MASK32
        y0 = np.uint64(k0) & _MASK32
        y1 = np.uint64(k1) & _MASK32
        for _ in range(10):
            p0 = _M0 * x0  # 32x32 -> 64-bit product: hi = p >> 32, lo = p & mask
            p1 = _M1 * x2
            n0 = ((p1 >> _S32) ^ x1 ^ y0) & _MASK32
            n2 = ((p0 >> _S32) ^ x3 ^ y1) & _MASK32
            x1 = p1 & _MASK32
            x3 = p0 & _MASK32
            x0 = n0
            x2 = n2
            y0 = (y0 + _W0) & _MASK32  # key bump (the one after round 10 is unused)
            y1 = (y1 + _W1) & _MASK32
        return x0, x1, x2, x3

    @jit
    def philox_block(seed, client, window, field, index, attempt):
        s = np.uint64(seed)
        c1 = (np.uint64(field) & np.uint64(0xFF)) | (np.uint64(attempt) << _S8)
        return philox4x32_10(index, c1, window, client, s & _MASK32, s >> _S32)

    @jit
    def u53(a, b):
        # 27 + 26 bits; +1 shifts the grid from [0, 1) to (0, 1]; all exact.
        # (int64 casts: cheaper int->float conversion, values < 2**27.)
        hi = np.int64(np.uint64(a) >> _S5)
        lo = np.int64(np.uint64(b) >> _S6)
        return (hi * _TWO_POW_26 + lo + 1.0) * _TWO_POW_M53

    @jit
    def uniform2_attempt(seed, client, window, field, index, attempt):
        w0, w1, w2, w3 = philox_block(seed, client, window, field, index, attempt)
        return u53(w0, w1), u53(w2, w3)

    @jit
    def uniform2(seed, client, window, field, index):
        return uniform2_attempt(seed, client, window, field, index, 0)

    @jit
    def uniform(seed, client, window, field, index):
        u1, u2 = uniform2_attempt(seed, client, window, field, index, 0)
        return u1

    @jit
    def _box_muller(u1, u2):
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)

    @jit
    def normal(seed, client, window, field, index):
        u1, u2 = uniform2_attempt(seed, client, window, field, index, 0)
        return _box_muller(u1, u2)

    @jit
    def exponential(seed, client, window, field, index):
        u1, u2 = uniform2_attempt(seed, client, window, field, index, 0)
        return 0.0 - math.log(u1)  # 0.0 - x: u1 == 1 gives +0.0, not -0.0

    @jit
    def weibull(shape, seed, client, window, field, index):
        u1, u2 = uniform2_attempt(seed, client, window, field, index, 0)
        return (0.0 - math.log(u1)) ** (1.0 / shape)

    @jit
    def gamma(shape, seed, client, window, field, index):
        if not shape > 0.0:  # also catches NaN
            return math.nan
        a = shape + 1.0 if shape < 1.0 else shape
        d = a - _ONE_THIRD
        c = 1.0 / math.sqrt(9.0 * d)
        for t in range(GAMMA_MAX_ATTEMPTS):
            u1, u2 = uniform2_attempt(seed, client, window, field, index, 2 * t)
            z = _box_muller(u1, u2)
            v = 1.0 + c * z
            if v <= 0.0:
                continue
            v = v * v * v
            ua, ub = uniform2_attempt(seed, client, window, field, index,
                                      2 * t + 1)
            zz = z * z
            if ua < 1.0 - 0.0331 * (zz * zz) or \
                    math.log(ua) < 0.5 * zz + d * (1.0 - v + math.log(v)):
                g = d * v
                if shape < 1.0:  # boost: U = u2 of the slot-1 block
                    if t != 0:  # at t == 0 that block is the one just drawn
                        ua, ub = uniform2_attempt(seed, client, window, field,
                                                  index, 1)
                    g = g * ub ** (1.0 / shape)
                return g
        return math.nan

    return types.SimpleNamespace(
        philox4x32_10=philox4x32_10, philox_block=philox_block,
        u53=u53, uniform2_attempt=uniform2_attempt, uniform2=uniform2,
        uniform=uniform,
        box_muller=_box_muller, normal=normal, exponential=exponential,
        weibull=weibull, gamma=gamma)


def _identity(f):
    return f


# Pure-Python twins (slow; NumPy uint64 scalars) -- handy for debugging/KATs.
PY = make_samplers(_identity)

# CPU (numba.njit) versions: the public scalar API.
_CPU = make_samplers(_jit)
philox4x32_10 = _CPU.philox4x32_10
philox_block = _CPU.philox_block
u53 = _CPU.u53
uniform2_attempt = _CPU.uniform2_attempt
uniform2 = _CPU.uniform2
uniform = _CPU.uniform
normal = _CPU.normal
exponential = _CPU.exponential
weibull = _CPU.weibull
gamma = _CPU.gamma


# --------------------------------------------------------------------------
# Vectorized NumPy reference backend (same arithmetic, array-at-a-time).
# --------------------------------------------------------------------------

# The compiled samplers call libm for log, pow, cos and sin (numba lowers math.* and ``**``
# to libm calls). NumPy's ufuncs may use their own SIMD code instead (np.log and np.power on
# AVX-512 hosts), which is not correctly rounded and differs from libm in the last ulp. The
# twins (but normal_np) call these four through ``math``, i.e. the same libm, one at a time;
# sqrt and + - * / are correctly rounded everywhere and stay vectorised.

def _libm_np(f, ufunc, *xs):
    """``f`` (a ``math`` function) elementwise over broadcast float64 arrays."""
    arrays = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in xs))
    lists = [a.ravel().tolist() for a in arrays]
    try:
        flat = np.fromiter(map(f, *lists), np.float64, arrays[0].size)
    except (ValueError, OverflowError):  # math raises where C returns inf / nan
        flat = np.fromiter(map(lambda *a: _libm_special(f, ufunc, *a), *lists), np.float64,
                           arrays[0].size)
    return flat.reshape(arrays[0].shape)


def _libm_special(f, ufunc, *args):
    try:
        return f(*args)
    except (ValueError, OverflowError):
        # poles, domain errors and overflow: C99 fixes the result (+-inf, nan), NumPy agrees
        with np.errstate(all="ignore"):
            return float(ufunc(*args))


def log_np(x):
    """Natural log, bit-identical to libm's ``log`` (what the compiled kernels call)."""
    return _libm_np(math.log, np.log, x)


def pow_np(x, y):
    """``x ** y``, bit-identical to libm's ``pow``."""
    return _libm_np(math.pow, np.power, x, y)


def cos_np(x):
    """Cosine, bit-identical to libm's ``cos`` (NumPy may vectorise it in a later release)."""
    return _libm_np(math.cos, np.cos, x)


def sin_np(x):
    """Sine, bit-identical to libm's ``sin``."""
    return _libm_np(math.sin, np.sin, x)


def _u32_np(x):
    """Array of uint64 holding ``x mod 2**32`` (negative ints wrap)."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"integer input required, got dtype {x.dtype}")
    return x.astype(np.uint64) & _MASK32


def philox4x32_10_np(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 over broadcast integer arrays; returns 4 uint32 arrays."""
    x0, x1, x2, x3, y0, y1 = np.broadcast_arrays(
        *(_u32_np(v) for v in (c0, c1, c2, c3, k0, k1)))
    y0 = y0.copy()
    y1 = y1.copy()
    for _ in range(10):
        p0 = _M0 * x0
        p1 = _M1 * x2
        n0 = ((p1 >> _S32) ^ x1 ^ y0) & _MASK32
        n2 = ((p0 >> _S32) ^ x3 ^ y1) & _MASK32
        x1 = p1 & _MASK32
        x3 = p0 & _MASK32
        x0, x2 = n0, n2
        y0 = (y0 + _W0) & _MASK32
        y1 = (y1 + _W1) & _MASK32
    return tuple(w.astype(np.uint32) for w in (x0, x1, x2, x3))


def philox_block_np(seed, client, window, field, index, attempt=0):
    """Four uint32 word arrays for the keyed counters (broadcasting)."""
    s = np.uint64(seed)
    c1 = (_u32_np(field) & np.uint64(0xFF)) | (_u32_np(attempt) << _S8)
    return philox4x32_10_np(index, c1, window, client, s & _MASK32, s >> _S32)


def u53_np(a, b):
    """Uniform in (0, 1] from word arrays ``a``, ``b`` (see module doc)."""
    hi = (_u32_np(a) >> _S5).astype(np.int64)
    lo = (_u32_np(b) >> _S6).astype(np.int64)
    return (hi * _TWO_POW_26 + lo + 1.0) * _TWO_POW_M53


def uniform2_attempt_np(seed, client, window, field, index, attempt):
    w0, w1, w2, w3 = philox_block_np(seed, client, window, field, index, attempt)
    return u53_np(w0, w1), u53_np(w2, w3)


def uniform2_np(seed, client, window, field, index):
    return uniform2_attempt_np(seed, client, window, field, index, 0)


def uniform_np(seed, client, window, field, index):
    return uniform2_attempt_np(seed, client, window, field, index, 0)[0]


def _box_muller_np(u1, u2):
    return np.sqrt(-2.0 * log_np(u1)) * cos_np(_TWO_PI * u2)


def normal_np(seed, client, window, field, index):
    """Box-Muller with NumPy's own ufuncs, unlike the other twins: only the host-side
    population draws (servegen_fast.model.population) use it, and switching it to libm
    would change fleet traces on AVX-512 hosts (a stream change, to be versioned).
    The kernels' reference never calls it."""
    u1, u2 = uniform2_attempt_np(seed, client, window, field, index, 0)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)


def exponential_np(seed, client, window, field, index):
    return 0.0 - log_np(uniform_np(seed, client, window, field, index))


def weibull_np(shape, seed, client, window, field, index):
    e = exponential_np(seed, client, window, field, index)
    shape = np.asarray(shape, dtype=np.float64)
    return pow_np(e, 1.0 / shape)


def gamma_np(shape, seed, client, window, field, index):
    """Marsaglia-Tsang gamma(shape, 1), vectorized over the rejected subset."""
    shape, client, window, field, index = np.broadcast_arrays(
        np.asarray(shape, dtype=np.float64), _u32_np(client), _u32_np(window),
        _u32_np(field), _u32_np(index))
    out = np.full(shape.shape, np.nan)
    shape = shape.ravel()
    flat = out.reshape(-1)  # a view: writes land in ``out``
    valid = shape > 0.0
    small = valid & (shape < 1.0)
    a = np.where(small, shape + 1.0, shape)
    d = a - _ONE_THIRD
    with np.errstate(invalid="ignore", divide="ignore"):
        c = 1.0 / np.sqrt(9.0 * d)
    todo = np.flatnonzero(valid)
    cl, wi, fi, ix = (v.ravel() for v in (client, window, field, index))
    for t in range(GAMMA_MAX_ATTEMPTS):
        if todo.size == 0:
            break
        key = (seed, cl[todo], wi[todo], fi[todo], ix[todo])
        z = _box_muller_np(*uniform2_attempt_np(*key, 2 * t))
        v = 1.0 + c[todo] * z
        pos = v > 0.0
        v = v * v * v
        ua = uniform2_attempt_np(*key, 2 * t + 1)[0]
        zz = z * z
        dt = d[todo]
        acc = pos & (ua < 1.0 - 0.0331 * (zz * zz))
        # the log test only where the squeeze failed (as the scalar `or` does): v > 0 there
        chk = np.flatnonzero(pos & ~acc)
        acc[chk] = log_np(ua[chk]) < 0.5 * zz[chk] + dt[chk] * (1.0 - v[chk] + log_np(v[chk]))
        flat[todo[acc]] = dt[acc] * v[acc]
        todo = todo[~acc]
    boost = np.flatnonzero(small)
    if boost.size:
        bu2 = uniform2_attempt_np(seed, cl[boost], wi[boost], fi[boost],
                                  ix[boost], 1)[1]
        flat[boost] = flat[boost] * pow_np(bu2, 1.0 / shape[boost])
    return out
