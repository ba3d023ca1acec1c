"""Per-unit and per-row sampling logic, one source for the CPU and CUDA backends.

`make_bodies(jit, samplers)` compiles these scalar functions with a decorator
(`numba.njit` for cpu.py, `numba.cuda.jit(device=True)` for cuda.py) on top of the Philox
samplers built with the same decorator. The backends only differ in how they loop over
units and rows (prange vs grid-stride), so their results cannot drift apart.
"""
from __future__ import annotations

import math
import types

from . import philox as px

from .stream2 import make_stream2
from .codes import CORR_COMONOTONE, CORR_INDEPENDENT, LAW_GAMMA, LAW_STREAM2, LAW_WEIBULL, MODE_SERVEGEN
# Length streams: base field f uses FIELD_BASE + f (independent) or FIELD_BASE for all
# fields (comonotone); item i of list field f uses FIELD_ITEM + f with attempt i.
FIELD_BASE = 16
FIELD_ITEM = 48
_FIELD_IAT = px.FIELD_IAT
_FIELD_START = px.FIELD_RENEWAL_START
_FIELD_COPULA = px.FIELD_COPULA
_TWO_PI = 2.0 * math.pi
_INV_SQRT2 = 0.7071067811865476


def make_bodies(jit, s):
    """Compile the scalar bodies with `jit` over the samplers namespace `s` (philox.make_samplers)."""
    gamma, weibull, exponential = s.gamma, s.weibull, s.exponential
    gamma2 = make_stream2(jit, s).gamma2
    uniform, uniform2_attempt = s.uniform, s.uniform2_attempt

    @jit
    def draw(law, k, seed, client, window, field, index):
        """One scale-1 inter-arrival draw of the unit's law (law + LAW_STREAM2: arrival stream 2,
        which differs in Gamma only)."""
        if law == LAW_GAMMA:
            return gamma(k, seed, client, window, field, index)
        if law == LAW_GAMMA + LAW_STREAM2:
            return gamma2(k, seed, client, window, field, index)
        if law == LAW_WEIBULL or law == LAW_WEIBULL + LAW_STREAM2:
            return weibull(k, seed, client, window, field, index)
        return exponential(seed, client, window, field, index)

    @jit
    def residual(law, k, scale, seed, client, window):
        """Equilibrium (forward-recurrence) time: U × a length-biased interval."""
        u = uniform(seed, client, window, _FIELD_START, 1)
        base = law - LAW_STREAM2 if law >= LAW_STREAM2 else law
        a = 2.0
        if base == LAW_GAMMA:
            a = k + 1.0
        elif base == LAW_WEIBULL:
            a = 1.0 + 1.0 / k
        if law >= LAW_STREAM2:
            b = gamma2(a, seed, client, window, _FIELD_START, 0)
        else:
            b = gamma(a, seed, client, window, _FIELD_START, 0)
        if base == LAW_WEIBULL:
            b = b ** (1.0 / k)
        return u * b * scale

    @jit
    def count_unit(seed, client, window, length, law, k, scale):
        """Arrivals of a renewal process started in equilibrium, within [0, length)."""
        t = residual(law, k, scale, seed, client, window)
        c = 0
        while t < length:
            t = t + scale * draw(law, k, seed, client, window, _FIELD_IAT, c)
            c += 1
        return c

    @jit
    def count_fill_unit(seed, client, window, start, length, below, law, k, scale, first, lo, cap):
        """count_unit's count, and the unit's first `cap` arrival times (as fill_unit writes them)
        into first[lo:lo+cap]: one walk of the renewal sequence serves the count and the fill."""
        t = residual(law, k, scale, seed, client, window)
        c = 0
        while t < length:
            if c < cap:
                v = start + t
                first[lo + c] = v if v < below else below
            t = t + scale * draw(law, k, seed, client, window, _FIELD_IAT, c)
            c += 1
        return c

    @jit
    def fill_unit(mode, seed, client, window, start, length, below, law, k, scale, lo, m, out_t):
        """Arrival times of one unit into out_t[lo:lo+m]; `below` = the largest float before the window end."""
        if mode == MODE_SERVEGEN:
            s_ = 0.0
            for j in range(m):
                s_ = s_ + draw(law, k, seed, client, window, _FIELD_IAT, j)
                out_t[lo + j] = s_
            total = s_ + draw(law, k, seed, client, window, _FIELD_IAT, m)
            for j in range(m):
                t = start + length * (out_t[lo + j] / total)
                out_t[lo + j] = t if t < below else below
        else:
            t = residual(law, k, scale, seed, client, window)
            for j in range(m):
                v = start + t  # t < length, but the sum may round up onto the window end
                out_t[lo + j] = v if v < below else below
                if j + 1 < m:  # the draw after the last arrival only ends the window: skip it
                    t = t + scale * draw(law, k, seed, client, window, _FIELD_IAT, j)

    @jit
    def lookup(values, cdf, guide, lo, hi, goff, u):
        """First support value whose cdf reaches u (u in (0, 1]). The guide table narrows the
        search to the points whose cdf lies in [g/n, (g+1)/n); the fix-ups make it exact."""
        n = hi - lo
        g = int(u * n)
        if g >= n:
            g = n - 1
        a = lo + guide[goff + g]
        b = lo + guide[goff + g + 1]
        while a < b:
            mid = (a + b) >> 1
            if cdf[mid] < u:
                a = mid + 1
            else:
                b = mid
        while a > lo and cdf[a - 1] >= u:
            a -= 1
        while cdf[a] < u:
            a += 1
        return values[a]

    @jit
    def phi(x):
        return 0.5 * math.erfc(-x * _INV_SQRT2)

    @jit
    def base_row(corr_mode, sa, sb, seed, cu, wu, k, u, dist, values, cdf, doff, guide, goff, out, row):
        """out[row, f] for every base field f of request k of unit u."""
        n_fields = dist.shape[1]
        if corr_mode == CORR_COMONOTONE:
            v = uniform(seed, cu, wu, FIELD_BASE, k)
            for f in range(n_fields):
                d = dist[u, f]
                out[row, f] = lookup(values, cdf, guide, doff[d], doff[d + 1], goff[d], v)
        elif corr_mode == CORR_INDEPENDENT:
            for f in range(n_fields):
                d = dist[u, f]
                out[row, f] = lookup(values, cdf, guide, doff[d], doff[d + 1], goff[d],
                                     uniform(seed, cu, wu, FIELD_BASE + f, k))
        else:
            u1, u2 = uniform2_attempt(seed, cu, wu, _FIELD_COPULA, k, 0)
            z0 = math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)
            for f in range(n_fields):
                m = f + 1  # normal number m: Box-Muller pair m // 2, cos for even m, sin for odd m
                u1, u2 = uniform2_attempt(seed, cu, wu, _FIELD_COPULA, k, m >> 1)
                r = math.sqrt(-2.0 * math.log(u1))
                z = r * math.cos(_TWO_PI * u2) if (m & 1) == 0 else r * math.sin(_TWO_PI * u2)
                d = dist[u, f]
                out[row, f] = lookup(values, cdf, guide, doff[d], doff[d + 1], goff[d], phi(sa * z0 + sb * z))

    @jit
    def item_values(seed, client, window, k, count, d, field, values, cdf, doff, guide, goff, out, lo):
        """Token counts of the `count` items of one request into out[lo:lo+count]."""
        for i in range(count):
            u1, u2 = uniform2_attempt(seed, client, window, field, k, i)
            out[lo + i] = lookup(values, cdf, guide, doff[d], doff[d + 1], goff[d], u1)

    return types.SimpleNamespace(draw=draw, residual=residual, count_unit=count_unit,
                                 count_fill_unit=count_fill_unit, fill_unit=fill_unit,
                                 lookup=lookup, phi=phi, base_row=base_row, item_values=item_values)
