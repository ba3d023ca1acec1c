"""Per-slot and per-session logic of multi-turn sessions, one source for the CPU and CUDA
backends (`kernels/reference_sessions.py` is the NumPy twin).

Keyed draws (Philox, key = seed; see philox.py), for the request slot k of (client, window):

Session draws use the four 32-bit words of one Philox block as four uniforms
u = (word + 1) / 2**32 in (0, 1] (exact in float64; table lookups need no more resolution):

* role: block (FIELD_SESSION, k) = (u_keep, u_turns, u_share, u_prefix): the slot starts a
  session when u_keep <= keep probability (par[p, 0]; session stream 2 passes 1: its slots are
  session starts already, sample/sessions.py), with turns = the profile's turns table at u_turns,
  from a shared prompt when u_share <= prefix share, prompt index = the prefix table at u_prefix.
* turn t >= 1 of that session: block (FIELD_TURN, k, attempt t) = (u_think, u_new, u_base, -):
  think time, new tokens, and the pool's base fields (one uniform for all);
  timestamp = previous + (ttft + tpot × previous output) + think,
  input = previous input + previous output + new tokens; a turn more than max span after the
  first ends the session (its rows get turn -1 and are dropped by the caller).
* block ids (63-bit): a session is one growing token stream (prompt, turn 1's text, its
  answer, turn 2's new text, ...) and each turn's input is a prefix of it, so a full block's
  content depends only on (session, block index): id = hash(session id, b). Blocks fully inside
  the shared prompt: hash(client, prefix id, b); the last, partial block:
  hash(session id, b, tokens in it).

Tables are searched by `tab_index` (first entry whose cumulative probability reaches u), from
a guide table so a search takes about one step instead of a bisection's log2(n) dependent loads.
"""
from __future__ import annotations

import types

import numpy as np

# Field ids (philox.py reserves 0..15 for the package; 0..6 are taken there)
FIELD_SESSION = 7        # a slot's session role (attempt 0: keep, turns; 1: prefix)
FIELD_TURN = 8           # a later turn's think time and new tokens (attempt = turn)
FIELD_BLOCK = 9          # a session's full KV block (index = block; counter words = session id)
FIELD_PREFIX_BLOCK = 10  # a shared prompt's block (attempt = prefix id, client word = client)
FIELD_PARTIAL_BLOCK = 11  # a session's last, partial block (attempt = tokens in it)
_FIELD_SESSION = FIELD_SESSION
_FIELD_TURN = FIELD_TURN
_FIELD_BLOCK = FIELD_BLOCK
_FIELD_PREFIX_BLOCK = FIELD_PREFIX_BLOCK
_FIELD_PARTIAL_BLOCK = FIELD_PARTIAL_BLOCK
PREFIX_WINDOW_WORD = 0xFFFFFFFF  # counter word c2 of prompt blocks (no window: prompts are the client's)
_M32 = np.uint64(0xFFFFFFFF)
_M31 = np.uint64(0x7FFFFFFF)
_S32 = np.uint64(32)


_TWO_POW_M32 = 1.0 / 4294967296.0
GUIDE_STEPS = 8  # guide buckets per table entry: more make a walk (a mispredicted branch) rarer


def make_session_bodies(jit, s, lookup):
    """Compile the session bodies with `jit` over samplers `s` and the pool's `lookup` (bodies.py)."""
    philox_block = s.philox_block

    @jit
    def u32(w):
        return (np.float64(np.uint64(w) & _M32) + 1.0) * _TWO_POW_M32

    @jit
    def tab_index(cdf, sguide, lo, hi, u):
        # lo + the number of cdf[lo:hi-1] below u (a prefix: cdf is non-decreasing), so at most
        # hi - 1. The guide (SessionTables.guide, GUIDE_STEPS buckets an entry) starts the
        # search at the first entry reaching the bucket's lower edge, rarely more than a step
        # away; the two walks make the index exact whatever the rounding of u * n, so the guide
        # changes the speed, never the result.
        n = (hi - lo) * GUIDE_STEPS
        g = int(u * n)
        if g >= n:
            g = n - 1
        a = lo + sguide[lo * GUIDE_STEPS + g]
        while a > lo and cdf[a - 1] >= u:
            a -= 1
        while a < hi - 1 and cdf[a] < u:
            a += 1
        return a

    @jit
    def slot_role(seed, client, window, k, p, values, cdf, sguide, off, par):
        """(turns, prefix index) of a slot; turns 0: the slot is thinned away; p < 0: no sessions."""
        if p < 0:
            return 1, -1
        w0, w1, w2, w3 = philox_block(seed, client, window, _FIELD_SESSION, k, 0)
        if u32(w0) > par[p, 0]:
            return 0, -1
        turns = int(values[tab_index(cdf, sguide, off[p, 0], off[p, 1], u32(w1))])
        u_share = u32(w2)
        u_pre = u32(w3)
        pid = -1
        if u_share <= par[p, 1]:
            pid = tab_index(cdf, sguide, off[p, 3], off[p, 4], u_pre) - off[p, 3]
        return turns, pid

    @jit
    def expand_session(seed, client, window, k, p, turns, ts0, fin, fout, values, cdf, sguide, off, par, dist, vals, r,
                       pv, pc, pdoff, guide, goff, out_ts, out_vals, out_think, out_turn, lo):
        """Turns 1 .. turns-1 of the session started by slot k into rows lo, lo+1, ...;
        vals[r] = the first turn's base values, dist[r] its distributions."""
        ts = ts0
        inp = vals[r, fin]
        outp = vals[r, fout]
        nf = dist.shape[1]
        for t in range(1, turns):
            w0, w1, w2, w3 = philox_block(seed, client, window, _FIELD_TURN, k, t)
            u_think = u32(w0)
            u_new = u32(w1)
            ub = u32(w2)
            think = values[tab_index(cdf, sguide, off[p, 1], off[p, 2], u_think)]
            new = values[tab_index(cdf, sguide, off[p, 2], off[p, 3], u_new)]
            ts = ts + (par[p, 2] + par[p, 3] * outp) + think
            row = lo + t - 1
            if ts - ts0 > par[p, 4]:  # past the session's max span: this turn and the rest are not made
                for j in range(row, lo + turns - 1):
                    out_turn[j] = -1
                    out_ts[j] = 0.0
                    out_think[j] = 0.0
                    for f in range(nf):
                        out_vals[j, f] = 0.0
                return
            for f in range(nf):
                if f != fin:  # the input is the context so far, not a draw: no lookup for it
                    d = dist[r, f]
                    out_vals[row, f] = lookup(pv, pc, guide, pdoff[d], pdoff[d + 1], goff[d], ub)
            inp = inp + outp + new
            out_vals[row, fin] = inp
            outp = out_vals[row, fout]
            out_ts[row] = ts
            out_think[row] = think
            out_turn[row] = t

    @jit
    def block_id(w0, w1):
        return np.int64(((np.uint64(w0) & _M31) << _S32) | (np.uint64(w1) & _M32))

    @jit
    def row_blocks(seed, sid, client, pid, ptok, inp, bs, out, lo):
        """Block ids of one request's input into out[lo:lo + ceil(inp / bs)]."""
        hi_w = np.uint64(sid) >> _S32
        lo_w = np.uint64(sid) & _M32
        nfull = inp // bs
        nblk = (inp + bs - 1) // bs
        npre = 0
        if pid >= 0:
            npre = min(ptok, inp) // bs
        for b in range(nblk):
            if b < npre:
                w0, w1, w2, w3 = philox_block(seed, client, PREFIX_WINDOW_WORD, _FIELD_PREFIX_BLOCK, b, pid)
            elif b < nfull:
                w0, w1, w2, w3 = philox_block(seed, hi_w, lo_w, _FIELD_BLOCK, b, 0)
            else:
                w0, w1, w2, w3 = philox_block(seed, hi_w, lo_w, _FIELD_PARTIAL_BLOCK, b, inp - b * bs)
            out[lo + b] = block_id(w0, w1)

    return types.SimpleNamespace(tab_index=tab_index, slot_role=slot_role, expand_session=expand_session,
                                 row_blocks=row_blocks)
