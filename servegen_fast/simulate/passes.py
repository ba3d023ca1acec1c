"""One instance's forward passes, compiled (Numba): scheduling a pass, applying it, and runs of
identical decode passes in closed form. The model is described in kernel.py.

Every function here is inlined into the event loop (`njit_inline`), which calls `advance` from
one place and `step` / `settle` from one more (each call site is a copy of the code): a call of
a separate jitted function passes each of its ~35 arrays as a struct of seven words, and these
run a few times per request (the event loop ran several times slower with them as calls;
benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np

from ..kernels.config import njit_inline
from .prefix import acquire, hits, note_cached, register, release, take, used_blocks

NONE = -1
# coef[IDLE_WAKE]: idle wake-up; coef[SEED]: the seed of the spread's draws; coef[SPREAD]: n, then n quantiles
IDLE_WAKE, SEED, SPREAD = 11, 12, 13
_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_SEED_MUL = np.uint64(0xD1B54A32D192ED03)


@njit_inline
def _mix(z):
    """splitmix64's finalizer (uint64 -> uint64)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit_inline
def spread_factor(coef, i, k):
    """The time factor of instance i's k-th pass with a prefill: a draw from the profile's
    spread quantiles (linear between them), keyed by (seed, instance, pass): the same for any
    chunking of the trace. 1.0 when the profile has none."""
    n = int(coef[SPREAD])
    if n < 2:
        return 1.0
    key = _mix(np.uint64(i) * _GOLD + np.uint64(1) + np.uint64(coef[SEED]) * _SEED_MUL)
    h = _mix(key + (np.uint64(k) + np.uint64(1)) * _GOLD)  # splitmix64's stream from `key`
    u = float(h >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # 53 bits: [0, 1)
    x = u * (n - 1)
    j = int(x)
    a = coef[SPREAD + 1 + j]
    return a + (x - j) * (coef[SPREAD + 2 + j] - a)


@njit_inline
def cdiv(a, b):
    return (a + b - 1) // b


@njit_inline
def _schedule(pc, i, r, c, need, free, blocks, chunk, ctx):
    """Request r takes `need` more blocks on instance i for a chunk of c tokens in this pass (1:
    a decode token); returns the KV tokens the chunk attends (its context after the pass)."""
    take(pc, i, need, free)
    blocks[r] += need
    chunk[r] = c
    return ctx[r] + c


@njit_inline
def step(i, clock, run, n_run, whead, wtail, n_wait, free, nxt, inp, out, ctx, pre, gen, blocks, chunk, pc,
          started, first, done, preempted, coef, page, budget_tokens, max_seqs, admit_free,
          st_dt, st_next, st_kv, st_run, st_wait, pend, pend_dt, pend_a, pend_k, npre):
    """Schedule the next pass of instance i at clock[i] and apply it; or, for a decode-only
    pass that can repeat, leave the run of identical passes pending (`settle` applies it)."""
    s = clock[i]
    # KV / queue samples at the grid points this instance reaches before its pass starts
    while st_next[i] < st_kv.shape[0] and st_next[i] * st_dt <= s:
        g = st_next[i]
        st_kv[g] += used_blocks(pc, i, free, run, n_run, blocks)
        st_run[g] += n_run[i]
        st_wait[g] += n_wait[i]
        st_next[i] += 1
    while True:
        budget = budget_tokens
        P = 0
        S = 0
        D = 0
        K = 0
        A = 0  # prefill chunk tokens x their sequence's context
        nsched = 0
        failed = False
        m = 1 << 62
        for j in range(n_run[i]):  # decode sequences first
            r = run[i, j]
            chunk[r] = 0
            if pre[r] == 0:
                need = cdiv(ctx[r] + 1, page) - blocks[r]
                if need > free[i]:
                    failed = True
                    continue
                K += _schedule(pc, i, r, 1, need, free, blocks, chunk, ctx)
                D += 1
                budget -= 1
                nsched += 1
                left = out[r] - gen[r]
                if left < m:
                    m = left
        stop_prefill = False
        for j in range(n_run[i]):  # then partially prefilled requests
            r = run[i, j]
            if pre[r] == 0 or budget == 0:
                continue
            if free[i] < admit_free and nsched > 0:
                stop_prefill = True
                break
            c = min(pre[r], budget)
            need = cdiv(ctx[r] + c, page) - blocks[r]
            if need > free[i]:
                failed = True
                continue
            kc = _schedule(pc, i, r, c, need, free, blocks, chunk, ctx)
            K += kc
            A += c * kc
            P += c
            S += 1
            budget -= c
            nsched += 1
        while not stop_prefill and budget > 0 and whead[i] != NONE and n_run[i] < max_seqs:  # then the queue
            if free[i] < admit_free and nsched > 0:
                break
            r = whead[i]
            h, ev = hits(pc, i, r, inp, page)  # leading prompt blocks cached here: shared, not prefilled
            c = min(pre[r] - h * page, budget)
            need = cdiv(h * page + c, page) - h
            if need + ev > free[i]:
                failed = True
                break
            whead[i] = nxt[r]
            if whead[i] == NONE:
                wtail[i] = NONE
            n_wait[i] -= 1
            run[i, n_run[i]] = r
            n_run[i] += 1
            if started[r] != started[r]:
                started[r] = s
            if h > 0:
                acquire(pc, i, r, h, free)
                ctx[r] = h * page
                pre[r] -= h * page
                blocks[r] = h
            note_cached(pc, r, h, page)
            kc = _schedule(pc, i, r, c, need, free, blocks, chunk, ctx)
            K += kc
            A += c * kc
            P += c
            S += 1
            budget -= c
            nsched += 1
        # preempt what could not get a block: unscheduled decoders, or the latest admitted if nothing ran
        victims = 0
        for j in range(n_run[i] - 1, -1, -1):
            r = run[i, j]
            if (chunk[r] == 0 and pre[r] == 0 and failed) or (nsched == 0 and victims == 0 and failed):
                release(pc, i, r, blocks, free)
                pre[r] = inp[r] + gen[r]
                ctx[r] = 0
                preempted[r] = 1
                nxt[r] = whead[i]
                whead[i] = r
                if wtail[i] == NONE:
                    wtail[i] = r
                n_wait[i] += 1
                run[i, j] = NONE
                victims += 1
        if victims:
            k = 0
            for j in range(n_run[i]):
                if run[i, j] != NONE:
                    run[i, k] = run[i, j]
                    k += 1
            n_run[i] = k
        if nsched > 0:
            break
        if not failed:  # nothing to do (cannot happen while the instance has work)
            return
    dt = coef[0] + coef[1] * P + coef[2] * S + coef[3] * D
    if P > 0:
        dt += coef[6] + coef[8] * K + coef[5] * (P + D) * K + coef[7] * A
        dt *= spread_factor(coef, i, npre[i])  # npre[i]: instance i's passes with a prefill so far
        npre[i] += 1
    else:
        dt += coef[4] * K
        if D > 1:
            dt += coef[9] + coef[10] * K
    # identical decode-only passes: as many as fit before a completion or a block shortage
    if P == 0 and victims == 0 and m > 1:
        kmax = m
        if _extra_blocks(i, run, n_run, chunk, ctx, blocks, page, kmax) > free[i]:
            lo, hi = 1, kmax  # blocks needed by k passes grow with k: the largest k that fits
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _extra_blocks(i, run, n_run, chunk, ctx, blocks, page, mid) <= free[i]:
                    lo = mid
                else:
                    hi = mid - 1
            kmax = lo
        if kmax > 1:
            pend[i] = True
            pend_dt[i] = dt
            pend_a[i] = (coef[4] + (coef[10] if D > 1 else 0.0)) * D  # K grows by D a pass
            pend_k[i] = kmax
            return
    _apply(i, s + dt, clock, run, n_run, free, inp, out, ctx, pre, gen, blocks, chunk, pc, page, first, done)


@njit_inline
def settle(i, k, clock, run, n_run, free, inp, out, ctx, pre, gen, blocks, chunk, pc, first, done, page,
            pend, pend_dt, pend_a):
    """Apply the first k passes of instance i's pending run of identical decode passes."""
    extra = _extra_blocks(i, run, n_run, chunk, ctx, blocks, page, k)
    take(pc, i, extra, free)
    for j in range(n_run[i]):
        r = run[i, j]
        if chunk[r] == 1:
            blocks[r] = cdiv(ctx[r] + k, page)
            chunk[r] = k
    pend[i] = False
    _apply(i, clock[i] + k * pend_dt[i] + pend_a[i] * (k * (k - 1) // 2), clock, run, n_run, free, inp, out, ctx,
           pre, gen, blocks, chunk, pc, page, first, done)


@njit_inline
def _apply(i, end, clock, run, n_run, free, inp, out, ctx, pre, gen, blocks, chunk, pc, page, first, done):
    """The scheduled pass(es) of instance i end at `end`: tokens, first tokens, completions."""
    w = 0
    for j in range(n_run[i]):
        r = run[i, j]
        c = chunk[r]
        keep = True
        if c > 0:
            if pre[r] == 0:
                gen[r] += c
                ctx[r] += c
            else:
                ctx[r] += c
                pre[r] -= c
                register(pc, i, r, ctx, inp, page, free)
                if pre[r] == 0:
                    gen[r] += 1
                    if first[r] != first[r]:
                        first[r] = end
            if pre[r] == 0 and gen[r] >= out[r]:
                done[r] = end
                release(pc, i, r, blocks, free)
                keep = False
            chunk[r] = 0
        if keep:
            run[i, w] = r
            w += 1
    n_run[i] = w
    clock[i] = end


@njit_inline
def _passes_before(s, dt, a, kmax, t_limit):
    """Passes j = 0..k-1 of durations dt + a·j starting at s: k = min(kmax, the number starting
    before t_limit). Start of pass j: s + j·dt + a·j(j-1)/2 (closed form, no loop over passes)."""
    if t_limit == np.inf:
        return kmax
    room = t_limit - s
    # smallest j >= 1 with j·dt + a·j(j-1)/2 >= room, from the quadratic, then corrected exactly
    if a > 0:
        b = dt - 0.5 * a
        j = int(np.ceil((-b + np.sqrt(b * b + 2.0 * a * room)) / a))
    else:
        j = int(np.ceil(room / dt))
    j = max(j, 1)
    if j > kmax:
        return kmax
    while j > 1 and (j - 1) * dt + a * ((j - 1) * (j - 2) // 2) >= room:
        j -= 1
    while j * dt + a * (j * (j - 1) // 2) < room:
        j += 1
    return min(j, kmax)


@njit_inline
def _extra_blocks(i, run, n_run, chunk, ctx, blocks, page, k):
    """Blocks the scheduled decoders need beyond what they hold to run k passes."""
    e = 0
    for j in range(n_run[i]):
        r = run[i, j]
        if chunk[r] == 1:
            e += cdiv(ctx[r] + k, page) - blocks[r]
    return e


@njit_inline
def advance(q, t, target, clock, run, n_run, whead, wtail, n_wait, free, nxt, inp, out, ctx, pre, gen, blocks, chunk,
            pc, started, first, done, preempted, coef, page, budget_tokens, max_seqs, admit_free,
             st_dt, st_next, st_kv, st_run, st_wait, pend, pend_dt, pend_a, pend_k, npre):
    """Run instance q through every pass that starts before t. A pending run of identical
    decode passes whose last pass starts after t stays pending (its load cannot change before
    that pass ends), unless a request is routed to q at t (`target`): then the passes started
    before t apply."""
    while True:
        if pend[q]:
            k = pend_k[q]
            last = clock[q] + (k - 1) * pend_dt[q] + pend_a[q] * ((k - 1) * (k - 2) // 2)  # start of its last pass
            whole = last < t
            if not whole:
                if not target:
                    return
                k = _passes_before(clock[q], pend_dt[q], pend_a[q], k, t)
            settle(q, k, clock, run, n_run, free, inp, out, ctx, pre, gen, blocks, chunk, pc, first, done, page,
                   pend, pend_dt, pend_a)
            if whole:
                continue  # its completions included
            return
        if clock[q] >= t or (n_run[q] == 0 and whead[q] == NONE):
            return
        step(q, clock, run, n_run, whead, wtail, n_wait, free, nxt, inp, out, ctx, pre, gen, blocks, chunk, pc,
             started, first, done, preempted, coef, page, budget_tokens, max_seqs, admit_free,
             st_dt, st_next, st_kv, st_run, st_wait, pend, pend_dt, pend_a, pend_k, npre)
