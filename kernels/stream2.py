"""Arrival stream 2 (kernels/codes.py): Gamma with one Philox block per attempt.

gamma2(a) is Marsaglia-Tsang, as philox.gamma, but attempt ``t`` uses the one block at attempt
slot ``t``, its four words as 32-bit uniforms ``u32(w) = (w + 1) * 2**-32`` in (0, 1]: words 0
and 1 the Box-Muller normal, word 2 the acceptance uniform, word 3 the boost ``U`` for
``a < 1`` (``G(a + 1) * U ** (1/a)``, from the accepted attempt's block). Stream 1 takes two
blocks per attempt (53-bit uniforms) and, past the first attempt, a third for the boost. The
coarser grid cuts the normal at |z| <= 6.66 (3e-11 of its mass lies beyond) and the boost's U
at 2**-32; tests/test_stream2.py checks the law (KS, moments, tails). ``a <= 0`` or NaN gives
NaN; at most philox.GAMMA_MAX_ATTEMPTS attempts.

`make_stream2(jit, s)` compiles it with a decorator over the samplers `s` that
`philox.make_samplers(jit)` built (CPU, CUDA or pure Python, one source); `gamma2_np` is the
vectorised NumPy twin (libm's log and pow, as the compiled code).
"""
from __future__ import annotations

import math
import types

import numpy as np

from . import config
from . import philox as px

_MASK32 = np.uint64(0xFFFFFFFF)
_TWO_POW_M32 = 1.0 / 4294967296.0  # 2**-32, exact
_ONE_THIRD = 1.0 / 3.0
_MAX = px.GAMMA_MAX_ATTEMPTS


def make_stream2(jit, s):
    """u32 and gamma2 compiled with `jit` over the samplers namespace `s`."""
    philox_block, box_muller = s.philox_block, s.box_muller

    @jit
    def u32(w):
        # (w + 1) * 2**-32, exact (int64: the cheaper conversion)
        return (np.int64(np.uint64(w) & _MASK32) + 1.0) * _TWO_POW_M32

    @jit
    def gamma2(shape, seed, client, window, field, index):
        if not shape > 0.0:  # also catches NaN
            return math.nan
        a = shape + 1.0 if shape < 1.0 else shape
        d = a - _ONE_THIRD
        c = 1.0 / math.sqrt(9.0 * d)
        for t in range(_MAX):
            w0, w1, w2, w3 = philox_block(seed, client, window, field, index, t)
            z = box_muller(u32(w0), u32(w1))
            v = 1.0 + c * z
            if v <= 0.0:
                continue
            v = v * v * v
            ua = u32(w2)
            zz = z * z
            if ua < 1.0 - 0.0331 * (zz * zz) or \
                    math.log(ua) < 0.5 * zz + d * (1.0 - v + math.log(v)):
                g = d * v
                if shape < 1.0:
                    g = g * u32(w3) ** (1.0 / shape)
                return g
        return math.nan

    return types.SimpleNamespace(u32=u32, gamma2=gamma2)


PY = make_stream2(lambda f: f, px.PY)  # pure Python (debugging, tests)
_CPU = make_stream2(config.njit_inline, px._CPU)
u32 = _CPU.u32
gamma2 = _CPU.gamma2


def u32_np(w):
    """u32 over a word array."""
    return (px._u32_np(w).astype(np.int64) + 1.0) * _TWO_POW_M32


def gamma2_np(shape, seed, client, window, field, index):
    """gamma2 over broadcast arrays, vectorised over the attempts still to accept."""
    shape, client, window, field, index = np.broadcast_arrays(
        np.asarray(shape, dtype=np.float64), px._u32_np(client), px._u32_np(window),
        px._u32_np(field), px._u32_np(index))
    out = np.full(shape.shape, np.nan)
    shape = shape.ravel()
    flat = out.reshape(-1)  # a view: writes land in ``out``
    small = shape < 1.0
    d = np.where(small, shape + 1.0, shape) - _ONE_THIRD
    with np.errstate(invalid="ignore", divide="ignore"):
        c = 1.0 / np.sqrt(9.0 * d)
    todo = np.flatnonzero(shape > 0.0)
    cl, wi, fi, ix = (v.ravel() for v in (client, window, field, index))
    for t in range(_MAX):
        if todo.size == 0:
            break
        w0, w1, w2, w3 = px.philox_block_np(seed, cl[todo], wi[todo], fi[todo], ix[todo], t)
        z = px._box_muller_np(u32_np(w0), u32_np(w1))
        v = 1.0 + c[todo] * z
        pos = v > 0.0
        v = v * v * v
        ua = u32_np(w2)
        zz = z * z
        dt = d[todo]
        acc = pos & (ua < 1.0 - 0.0331 * (zz * zz))
        chk = np.flatnonzero(pos & ~acc)  # the log test only where the squeeze failed (the scalar `or`)
        acc[chk] = px.log_np(ua[chk]) < 0.5 * zz[chk] + dt[chk] * (1.0 - v[chk] + px.log_np(v[chk]))
        done = todo[acc]
        g = dt[acc] * v[acc]
        boost = small[done]
        if boost.any():
            g[boost] = g[boost] * px.pow_np(u32_np(w3[acc][boost]), 1.0 / shape[done[boost]])
        flat[done] = g
        todo = todo[~acc]
    return out
