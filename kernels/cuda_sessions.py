"""CUDA session kernels (the contract of `cpu.py`'s session_roles, expand_turns and
fill_block_ids): one thread per slot, session or request, grid-stride, over the same bodies
(`session_bodies.py`) compiled for the device."""
from __future__ import annotations

import numpy as np
from numba import cuda

from . import philox as px
from .cuda_kernels import _B, _dev, _launch
from .session_bodies import make_session_bodies

_djit = cuda.jit(device=True)
_S = make_session_bodies(_djit, px.make_samplers(_djit), _B.lookup)
_slot_role = _S.slot_role
_expand_session = _S.expand_session
_row_blocks = _S.row_blocks


@cuda.jit
def _roles_k(seed, client, window, k, prof, values, cdf, sguide, off, par, turns, pid):
    for r in range(cuda.grid(1), len(k), cuda.gridsize(1)):
        t, p = _slot_role(seed, client[r], window[r], k[r], prof[r], values, cdf, sguide, off, par)
        turns[r] = t
        pid[r] = p


@cuda.jit
def _expand_k(seed, client, window, k, prof, turns, ts, fin, fout, values, cdf, sguide, off, par, dist, vals, pv, pc,
              pdoff, guide, goff, toff, out_ts, out_vals, out_think, out_turn):
    for r in range(cuda.grid(1), len(k), cuda.gridsize(1)):
        if turns[r] > 1:
            _expand_session(seed, client[r], window[r], k[r], prof[r], turns[r], ts[r], fin, fout, values, cdf,
                            sguide, off, par, dist, vals, r, pv, pc, pdoff, guide, goff, out_ts, out_vals, out_think,
                            out_turn, toff[r])


@cuda.jit
def _blocks_k(seed, sid, client, pid, ptok, inp, bs, boff, out):
    for r in range(cuda.grid(1), len(sid), cuda.gridsize(1)):
        _row_blocks(seed, sid[r], client[r], pid[r], ptok[r], inp[r], bs, out, boff[r])


def session_roles(seed, client, window, k, prof, values, cdf, sguide, off, par):
    n = len(k)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    turns = cuda.device_array(n, np.int64)
    pid = cuda.device_array(n, np.int64)
    _launch(_roles_k, n, np.uint64(seed), _dev(client), _dev(window), _dev(k), _dev(prof), _dev(values), _dev(cdf),
            _dev(sguide), _dev(off), _dev(par), turns, pid)
    return turns.copy_to_host(), pid.copy_to_host()


def expand_turns(seed, client, window, k, prof, turns, ts, fin, fout, values, cdf, sguide, off, par, dist, vals, pv,
                 pc, pdoff, guide, goff, toff):
    m = int(toff[-1])
    nf = vals.shape[1]
    if m == 0:
        return np.empty(0), np.empty((0, nf)), np.empty(0), np.empty(0, np.int64)
    out_ts = cuda.device_array(m, np.float64)
    out_vals = cuda.device_array((m, nf), np.float64)
    out_think = cuda.device_array(m, np.float64)
    out_turn = cuda.device_array(m, np.int64)
    _launch(_expand_k, len(k), np.uint64(seed), _dev(client), _dev(window), _dev(k), _dev(prof), _dev(turns),
            _dev(ts), np.int64(fin), np.int64(fout), _dev(values), _dev(cdf), _dev(sguide), _dev(off), _dev(par),
            _dev(dist), _dev(vals), _dev(pv), _dev(pc), _dev(pdoff), _dev(guide), _dev(goff), _dev(toff), out_ts,
            out_vals, out_think, out_turn)
    return out_ts.copy_to_host(), out_vals.copy_to_host(), out_think.copy_to_host(), out_turn.copy_to_host()


def fill_block_ids(seed, sid, client, pid, ptok, inp, bs, boff):
    m = int(boff[-1])
    if m == 0:
        return np.zeros(0, np.int64)
    out = cuda.device_array(m, np.int64)
    _launch(_blocks_k, len(sid), np.uint64(seed), _dev(sid), _dev(client), _dev(pid), _dev(ptok), _dev(inp),
            np.int64(bs), _dev(boff), out)
    return out.copy_to_host()
