"""Plain NumPy reference of the session kernels (the spec; `session_bodies.py` has the compiled
logic). Same draws and the same arithmetic order as the compiled kernels, so results are equal."""
from __future__ import annotations

import numpy as np

from . import philox as px
from .session_bodies import (FIELD_BLOCK, FIELD_PARTIAL_BLOCK, FIELD_PREFIX_BLOCK, FIELD_SESSION, FIELD_TURN,
                             PREFIX_WINDOW_WORD)


def u32(w):
    """Uniform in (0, 1] from a 32-bit word: (w + 1) / 2**32."""
    return (w.astype(np.float64) + 1.0) * (1.0 / 4294967296.0)


def tab_index(cdf, lo, hi, u):
    """Per row: the first index in [lo, hi) whose cumulative probability reaches u (else hi - 1)."""
    out = np.empty(len(u), np.int64)
    for i in range(len(u)):
        j = lo[i] + np.searchsorted(cdf[lo[i]:hi[i]], u[i], side="left")
        out[i] = min(j, hi[i] - 1)
    return out


def session_roles(seed, client, window, k, prof, values, cdf, sguide, off, par):
    """(turns, prefix index) per slot: turns 0 = thinned away, prof < 0 = no sessions (1, -1).
    sguide (the compiled kernels' search guide) is unused: it never changes an index."""
    n = len(k)
    turns = np.ones(n, np.int64)
    pid = np.full(n, -1, np.int64)
    on = np.flatnonzero(prof >= 0)
    p = prof[on]
    w = px.philox_block_np(seed, client[on], window[on], FIELD_SESSION, k[on], 0)
    kept = u32(w[0]) <= par[p, 0]
    turns[on[~kept]] = 0
    on, p = on[kept], p[kept]
    u_turns, u_share, u_pre = (u32(x[kept]) for x in w[1:])
    turns[on] = values[tab_index(cdf, off[p, 0], off[p, 1], u_turns)].astype(np.int64)
    has = u_share <= par[p, 1]
    pid[on[has]] = tab_index(cdf, off[p[has], 3], off[p[has], 4], u_pre[has]) - off[p[has], 3]
    return turns, pid


def expand_turns(seed, client, window, k, prof, turns, ts, fin, fout, values, cdf, sguide, off, par, dist, vals, pv,
                 pc, pdoff, guide, goff, toff):
    """Later turns of each session, turn by turn over all sessions still going."""
    m = int(toff[-1])
    out_ts = np.empty(m)
    out_vals = np.empty((m, vals.shape[1]))
    out_think = np.empty(m)
    out_turn = np.empty(m, np.int64)
    cur_ts = ts.astype(np.float64).copy()
    cur_in = vals[:, fin].copy()
    cur_out = vals[:, fout].copy()
    out_turn[:] = -1
    out_ts[:] = 0.0
    out_think[:] = 0.0
    out_vals[:] = 0.0
    alive = np.ones(len(turns), bool)
    for t in range(1, int(turns.max(initial=1))):
        r = np.flatnonzero((turns > t) & alive)
        p = prof[r]
        w = px.philox_block_np(seed, client[r], window[r], FIELD_TURN, k[r], t)
        u_think, u_new, ub = u32(w[0]), u32(w[1]), u32(w[2])
        think = values[tab_index(cdf, off[p, 1], off[p, 2], u_think)]
        new = values[tab_index(cdf, off[p, 2], off[p, 3], u_new)]
        cur_ts[r] = cur_ts[r] + (par[p, 2] + par[p, 3] * cur_out[r]) + think
        over = cur_ts[r] - ts[r] > par[p, 4]  # past the max span: the session ends here
        alive[r[over]] = False
        r, p, think, new, ub = r[~over], p[~over], think[~over], new[~over], ub[~over]
        row = toff[r] + t - 1
        for f in range(dist.shape[1]):
            if f != fin:  # the input is the context so far (below), not a draw
                d = dist[r, f]
                out_vals[row, f] = pv[tab_index(pc, pdoff[d], pdoff[d + 1], ub)]  # the pool's inverse CDF
        cur_in[r] = cur_in[r] + cur_out[r] + new
        out_vals[row, fin] = cur_in[r]
        cur_out[r] = out_vals[row, fout]
        out_ts[row], out_think[row], out_turn[row] = cur_ts[r], think, t
    return out_ts, out_vals, out_think, out_turn


def fill_block_ids(seed, sid, client, pid, ptok, inp, bs, boff):
    """Block ids of every request's input (see session_bodies.py for the keys)."""
    n_blk = np.diff(boff)
    row = np.repeat(np.arange(len(sid)), n_blk)
    b = np.arange(len(row), dtype=np.int64) - boff[row]
    sid, inp, pid = sid.astype(np.uint64)[row], inp.astype(np.int64)[row], pid.astype(np.int64)[row]
    npre = np.where(pid >= 0, np.minimum(ptok.astype(np.int64)[row], inp) // bs, 0)
    nfull = inp // bs
    hi_w, lo_w = sid >> np.uint64(32), sid & np.uint64(0xFFFFFFFF)
    w0 = np.empty(len(row), np.uint32)
    w1 = np.empty(len(row), np.uint32)
    pre, full = b < npre, (b >= npre) & (b < nfull)
    part = ~pre & ~full
    for sel, args in ((pre, (client.astype(np.uint64)[row], PREFIX_WINDOW_WORD, FIELD_PREFIX_BLOCK, b, pid)),
                      (full, (hi_w, lo_w, FIELD_BLOCK, b, 0)),
                      (part, (hi_w, lo_w, FIELD_PARTIAL_BLOCK, b, inp - b * bs))):
        if sel.any():
            c, wnd, field, idx, att = (a[sel] if isinstance(a, np.ndarray) else a for a in args)
            w = px.philox_block_np(seed, c, wnd, field, idx, att)
            w0[sel], w1[sel] = w[0], w[1]
    return ((w0.astype(np.uint64) & np.uint64(0x7FFFFFFF)) << np.uint64(32) | w1.astype(np.uint64)).astype(np.int64)
