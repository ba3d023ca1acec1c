"""Byte-level parsers for ServeGen's text formats, compiled with Numba.

ServeGen stores each length distribution as a Python dict literal inside a JSON string
(``"{224: 0.0003, 225: 0.0008}"``); its loader `eval`s millions of them. Here the literals of
a file are joined with ``\\n`` and scanned once. Numbers are parsed to within one ulp of a
correctly rounded conversion (exact when the significand has at most 15 digits and the
decimal exponent is small), which is far below the precision of the data.

Each parser returns an error code and the byte offset of the first problem; the Python
caller turns that into a message naming the file, line or window and field.
"""
from __future__ import annotations

import numpy as np

from . import config

_jit = config.njit

OK = 0
ERR_NUMBER = 1      # a number was expected
ERR_SYNTAX = 2      # a separator (':' ',' '}') was expected
ERR_FIELDS = 3      # wrong number of CSV fields on a line
ERR_PATTERN = 4     # unknown arrival-pattern name

# Pattern codes match servegen_fast.model.pool.LAW_*: '' idle, Gamma, Weibull, Exponential.
_POW10 = np.array([10.0 ** i for i in range(23)])


@_jit
def _parse_number(buf, i, n, pow10):
    """Parse a decimal number starting at buf[i]; returns (value, next index, ok)."""
    neg = False
    if i < n and (buf[i] == 45 or buf[i] == 43):  # '-' '+'
        neg = buf[i] == 45
        i += 1
    mant = np.uint64(0)
    ndig = 0
    exp10 = 0
    seen = False
    while i < n and 48 <= buf[i] <= 57:
        seen = True
        if ndig < 19:
            mant = mant * np.uint64(10) + np.uint64(buf[i] - 48)
            if mant > 0:
                ndig += 1
        else:
            exp10 += 1
        i += 1
    if i < n and buf[i] == 46:  # '.'
        i += 1
        while i < n and 48 <= buf[i] <= 57:
            seen = True
            if ndig < 19:
                mant = mant * np.uint64(10) + np.uint64(buf[i] - 48)
                if mant > 0:
                    ndig += 1
                exp10 -= 1
            i += 1
    if not seen:
        return 0.0, i, False
    if i < n and (buf[i] == 101 or buf[i] == 69):  # 'e' 'E'
        i += 1
        eneg = False
        if i < n and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        e = 0
        eseen = False
        while i < n and 48 <= buf[i] <= 57:
            eseen = True
            if e < 10000:
                e = e * 10 + (buf[i] - 48)
            i += 1
        if not eseen:
            return 0.0, i, False
        exp10 += -e if eneg else e
    v = float(mant)
    # One correctly rounded operation when both operands are exact (Clinger's fast path);
    # otherwise repeated scaling, still within about an ulp for the magnitudes seen here.
    while exp10 > 22:
        v *= 1e22
        exp10 -= 22
    while exp10 < -22:
        v /= 1e22
        exp10 += 22
    if exp10 >= 0:
        v *= pow10[exp10]
    else:
        v /= pow10[-exp10]
    return (-v if neg else v), i, True


@_jit
def _skip_space(buf, i, n):
    while i < n and (buf[i] == 32 or buf[i] == 9 or buf[i] == 13):
        i += 1
    return i


@_jit
def parse_dict_literals(buf, n_segments):
    """Parse `n_segments` dict literals ``{k: v, ...}`` separated by '\\n'.

    Returns (keys, probs, counts, err, err_pos, err_segment). An empty literal ``{}``
    gives a count of 0. One return statement, as parse_trace_csv.
    """
    n = len(buf)
    cap = n // 4 + 1
    keys = np.empty(cap, np.float64)
    probs = np.empty(cap, np.float64)
    counts = np.zeros(n_segments, np.int64)
    pow10 = _POW10
    m = 0
    i = np.int64(0)  # not a literal 0: Numba would also compile _skip_space for Literal[int](0)
    err = OK
    bad = -1
    for seg in range(n_segments):
        i = _skip_space(buf, i, n)
        if i >= n or buf[i] != 123:  # '{'
            err = ERR_SYNTAX
        else:
            i = _skip_space(buf, i + 1, n)
            if i < n and buf[i] == 125:  # '}'
                i += 1
            else:
                while True:
                    i = _skip_space(buf, i, n)
                    k, i, ok = _parse_number(buf, i, n, pow10)
                    if not ok:
                        err = ERR_NUMBER
                        break
                    i = _skip_space(buf, i, n)
                    if i >= n or buf[i] != 58:  # ':'
                        err = ERR_SYNTAX
                        break
                    i = _skip_space(buf, i + 1, n)
                    p, i, ok = _parse_number(buf, i, n, pow10)
                    if not ok:
                        err = ERR_NUMBER
                        break
                    keys[m] = k
                    probs[m] = p
                    m += 1
                    counts[seg] += 1
                    i = _skip_space(buf, i, n)
                    if i < n and buf[i] == 44:  # ','
                        i += 1
                        continue
                    if i < n and buf[i] == 125:
                        i += 1
                        break
                    err = ERR_SYNTAX
                    break
            if err == OK:
                i = _skip_space(buf, i, n)
                if seg + 1 < n_segments:
                    if i >= n or buf[i] != 10:
                        err = ERR_SYNTAX
                    else:
                        i += 1
        if err != OK:
            bad = seg
            break
    return keys[:m], probs[:m], counts, err, i, bad


@_jit
def _pattern_code(buf, lo, hi):
    """'' -> 0, Gamma -> 1, Weibull -> 2, Exponential -> 3, anything else -> -1."""
    L = hi - lo
    if L == 0:
        return 0
    if L == 5 and buf[lo] == 71 and buf[lo + 1] == 97 and buf[lo + 2] == 109 and buf[lo + 3] == 109 and buf[lo + 4] == 97:
        return 1
    if L == 7 and buf[lo] == 87 and buf[lo + 1] == 101 and buf[lo + 2] == 105 and buf[lo + 3] == 98 \
            and buf[lo + 4] == 117 and buf[lo + 5] == 108 and buf[lo + 6] == 108:
        return 2
    if L == 11 and buf[lo] == 69 and buf[lo + 1] == 120 and buf[lo + 2] == 112 and buf[lo + 3] == 111 \
            and buf[lo + 4] == 110 and buf[lo + 5] == 101 and buf[lo + 6] == 110 and buf[lo + 7] == 116 \
            and buf[lo + 8] == 105 and buf[lo + 9] == 97 and buf[lo + 10] == 108:
        return 3
    return -1


@_jit
def parse_trace_csv(buf):
    """Parse ServeGen trace rows ``timestamp,rate,cv,pattern,param1,param2``.

    Returns (timestamp, rate, cv, law, p1, p2, err, err_line, err_field) with 1-based
    err_line and 0-based err_field. Blank lines are skipped. One return statement: each one
    (six slices and a tuple) was typed and lowered apart, most of the first compile's time.
    """
    n = len(buf)
    cap = 1
    for j in range(n):
        if buf[j] == 10:
            cap += 1
    ts = np.empty(cap, np.float64)
    rate = np.empty(cap, np.float64)
    cv = np.empty(cap, np.float64)
    law = np.empty(cap, np.int8)
    p1 = np.empty(cap, np.float64)
    p2 = np.empty(cap, np.float64)
    vals = np.zeros(6, np.float64)
    pow10 = _POW10
    m = 0
    line = 0
    field = 0
    err = OK
    i = np.int64(0)  # not a literal 0 (parse_dict_literals)
    while i < n:
        line += 1
        end = i
        while end < n and buf[end] != 10:
            end += 1
        hi = end
        while hi > i and (buf[hi - 1] == 13 or buf[hi - 1] == 32):
            hi -= 1
        if hi == i:
            i = end + 1
            continue
        # split into fields
        field = 0
        lo = i
        code = 0
        while True:
            fe = lo
            while fe < hi and buf[fe] != 44:
                fe += 1
            if field >= 6:
                err = ERR_FIELDS
                break
            if field == 3:
                a = _skip_space(buf, lo, fe)
                b = fe
                while b > a and buf[b - 1] == 32:
                    b -= 1
                code = _pattern_code(buf, a, b)
                if code < 0:
                    err = ERR_PATTERN
                    break
            else:
                a = _skip_space(buf, lo, fe)
                v, j, ok = _parse_number(buf, a, fe, pow10)
                j = _skip_space(buf, j, fe)
                if not ok or j != fe:
                    err = ERR_NUMBER
                    break
                vals[field] = v
            field += 1
            if fe >= hi:
                break
            lo = fe + 1
        if err == OK and field != 6:
            err = ERR_FIELDS
        if err != OK:
            break
        ts[m] = vals[0]
        rate[m] = vals[1]
        cv[m] = vals[2]
        law[m] = code
        p1[m] = vals[4]
        p2[m] = vals[5]
        m += 1
        i = end + 1
    if err == OK:
        line = 0
        field = 0
    return ts[:m], rate[:m], cv[:m], law[:m], p1[:m], p2[:m], err, line, field


@_jit
def segment_cdfs(keys, probs, counts):
    """Per-segment cleanup of parsed distributions.

    Drops zero-probability points, checks keys ascend, and turns probabilities into a CDF
    normalised to end at exactly 1.0. Returns (values, cdf, new_counts, sums, bad_segment,
    bad_kind) where bad_kind 1 = negative probability, 2 = keys not ascending, 3 = NaN.
    `sums` are the raw probability sums, for the caller's sum-to-one check. One return
    statement, as parse_trace_csv.
    """
    n_seg = len(counts)
    out_v = np.empty(len(keys), np.float64)
    out_c = np.empty(len(keys), np.float64)
    new_counts = np.zeros(n_seg, np.int64)
    sums = np.zeros(n_seg, np.float64)
    i = 0
    m = 0
    bad = -1
    kind = 0
    for s in range(n_seg):
        start = m
        acc = 0.0
        last = -np.inf
        for j in range(i, i + counts[s]):
            p = probs[j]
            if p != p or keys[j] != keys[j]:
                kind = 3
                break
            if p < 0.0:
                kind = 1
                break
            if keys[j] <= last:
                kind = 2
                break
            last = keys[j]
            if p > 0.0:
                acc += p
                out_v[m] = keys[j]
                out_c[m] = acc
                m += 1
        if kind:
            bad = s
            break
        i += counts[s]
        sums[s] = acc
        if acc > 0.0:
            for j in range(start, m):
                out_c[j] /= acc
            out_c[m - 1] = 1.0
        new_counts[s] = m - start
    return out_v[:m], out_c[:m], new_counts, sums, bad, kind
