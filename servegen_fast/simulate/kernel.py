"""The cluster simulator's event loop, compiled (Numba): no Python per request or per step.

Each instance is a continuous-batching engine (the model of transformers' FIFO scheduler,
which vLLM's chunked prefill resembles): one forward pass at a time; each pass takes every
running decode sequence first (one token each), then prefill chunks (a partially prefilled
request first, then the waiting queue in arrival order) while the token budget lasts; a new
request is admitted only while the free KV blocks are at least the admission reserve (or
when nothing else is in the pass). KV is paged: a sequence of n tokens holds ceil(n / page)
blocks. A decode sequence that finds no free block is preempted (its blocks freed; it goes
back to the head of the queue and is recomputed from its prompt and the tokens made so far);
if no pass can be built at all, the latest admitted request is preempted. A request whose
prompt and output cannot fit the whole cache is dropped at arrival.

Pass time = base + prefill_token·P + prefill_seq·S + decode_seq·D
            + kv_token·K + (batched + batched_kv·K)·[D > 1]                  (decode-only passes)
            + prefill_pass + prefill_kv·K + varlen_qk·(P + D)·K + prefill_attn·A   (the others;
            A: each prefill chunk's tokens x its sequence's context, summed; profile.py)

A pass with a prefill chunk takes that time times a factor drawn from the profile's spread,
keyed by (seed, instance, its count of such passes): passes.spread_factor. A request arriving at an
idle instance waits the profile's idle wake-up (the engine loop's) before its first pass. The
first token of a request appears at the end of the pass that finishes its prefill; each later
pass makes one more. Requests are routed at arrival: round-robin, least-loaded (fewest
running + waiting; ties to the lowest index) or prefix-aware (the instance of the request's
prefix key, unless it carries more than twice the least load plus 2; else least-loaded).

Passes of only decode sequences with no completion, arrival or block shortage in between have
the same composition, so they are taken together: their times form an arithmetic series (K
grows by D a pass), applied in closed form. Such a run stays pending while it lasts; a request
routed to its instance cuts it at the first pass boundary after the arrival (the pass in
progress at an arrival completes before the request joins the queue). Round-robin advances
only the instance a request goes to; the other routers bring every instance up to the arrival
to read its load, which a pending run does not change until it ends.

Closed loop (sessions): a later turn arrives at its previous turn's completion (or drop) plus
its think time, from a heap; before each arrival every instance's passes that start before it
are taken in start order over the cluster (a pending run at its last pass's start), since a
completion may release a turn due before the next arrival. Prefix reuse in each instance's
KV cache: prefix.py (shared cached blocks change only which blocks a pass needs).

Speed: the passes are inlined (passes.py) and the loop works on borrowed views of its arrays
(borrow.py: no reference counting); the arrays are allocated by the Python caller.
"""
from __future__ import annotations

import numpy as np

from ..kernels.config import njit, njit_inline
from .borrow import borrow
from .passes import IDLE_WAKE, NONE, advance, cdiv, settle, step

ROUTERS = {"round-robin": 0, "least-loaded": 1, "prefix-aware": 2}
COMPLETED, DROPPED = 0, 1


@njit_inline
def _hpush(ht, hi, hn, t, j):
    """Push (t, j) on the binary min-heap ht/hi of hn[0] entries, ordered by (time, index)."""
    k = hn[0]
    hn[0] += 1
    while k > 0:
        p = (k - 1) // 2
        if ht[p] < t or (ht[p] == t and hi[p] < j):
            break
        ht[k], hi[k] = ht[p], hi[p]
        k = p
    ht[k], hi[k] = t, j


@njit_inline
def _hpop(ht, hi, hn):
    hn[0] -= 1
    m = hn[0]
    t, j = ht[m], hi[m]
    k = 0
    while True:
        c = 2 * k + 1
        if c >= m:
            break
        if c + 1 < m and (ht[c + 1] < ht[c] or (ht[c + 1] == ht[c] and hi[c + 1] < hi[c])):
            c += 1
        if t < ht[c] or (t == ht[c] and j < hi[c]):
            break
        ht[k], hi[k] = ht[c], hi[c]
        k = c
    ht[k], hi[k] = t, j


@njit_inline
def _run_last(clock, pend_k, pend_dt, pend_a, q):
    """Start of the last pass of instance q's pending run of identical decode passes."""
    k = pend_k[q]
    return clock[q] + (k - 1) * pend_dt[q] + pend_a[q] * ((k - 1) * (k - 2) // 2)


def work_arrays(n: int, n_inst: int, max_seqs: int, kv_blocks: int) -> tuple:
    """The event loop's state, allocated by its (Python) caller, which keeps it alive while the
    loop runs on borrowed views of it (borrow.py)."""
    return (np.zeros(n_inst), np.full((n_inst, max_seqs), NONE, np.int64), np.zeros(n_inst, np.int64),
            np.full(n_inst, NONE, np.int64), np.full(n_inst, NONE, np.int64), np.zeros(n_inst, np.int64),
            np.full(n_inst, kv_blocks, np.int64), np.zeros(n_inst, np.int64), np.zeros(n_inst, np.bool_),
            np.zeros(n_inst), np.zeros(n_inst), np.zeros(n_inst, np.int64),
            np.full(n, NONE, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
            np.zeros(n, np.int64), np.empty(n), np.empty(n, np.int64), np.zeros(1, np.int64),
            np.empty(max_seqs, np.int64), np.zeros(1, np.int64), np.zeros(n_inst, np.int64))


@njit
def simulate_kernel(arrival, follower, think, inp, out, key, router, n_inst, coef, page, kv_blocks, budget_tokens,
                    max_seqs, admit_free, st_dt, inst, started, first, done, gen, preempted, status, released,
                    st_kv, st_run, st_wait, pc, work, final=True):
    """Heads (arrival finite, in time order) arrive at `arrival`; a later turn r (arrival inf) at
    its predecessor's completion (or drop) + think[r]; follower[r]: the next turn of r's session.
    `work`: `work_arrays(...)`; its first array ends as the instances' clocks. Not `final`: stop
    after the last arrival, leaving the instances' work pending in `work` (stream.py goes on
    from there with the next chunk of arrivals); else run every instance to its last pass."""
    n = arrival.shape[0]
    arrival, follower, think, inp, out, key = (borrow(arrival), borrow(follower), borrow(think), borrow(inp),
                                               borrow(out), borrow(key))
    inst, started, first, done, gen, preempted = (borrow(inst), borrow(started), borrow(first), borrow(done),
                                                 borrow(gen), borrow(preempted))
    status, released, st_kv, st_run, st_wait = (borrow(status), borrow(released), borrow(st_kv), borrow(st_run),
                                                borrow(st_wait))
    coef, pc = borrow(coef), borrow(pc)
    clock, run, n_run, whead, wtail, n_wait, free, st_next, pend, pend_dt, pend_a, pend_k = (
        borrow(work[0]), borrow(work[1]), borrow(work[2]), borrow(work[3]), borrow(work[4]), borrow(work[5]),
        borrow(work[6]), borrow(work[7]), borrow(work[8]), borrow(work[9]), borrow(work[10]), borrow(work[11]))
    nxt, ctx, pre, blocks, chunk = (borrow(work[12]), borrow(work[13]), borrow(work[14]), borrow(work[15]),
                                    borrow(work[16]))
    # ht/hi/hn: later turns released, not yet arrived, a heap by (time, index); cursor: round-robin's count
    ht, hi, hn, snap, cursor = borrow(work[17]), borrow(work[18]), borrow(work[19]), borrow(work[20]), borrow(work[21])
    npre = borrow(work[22])  # each instance's passes with a prefill so far (the key of their spread)
    closed = False
    for r in range(n):
        if follower[r] != NONE:
            closed = True
            break
    h = 0
    while True:
        for attempt in range(2):  # the next arrival; closed loop: once more after the passes before it
            if h < n and arrival[h] < np.inf and (hn[0] == 0 or arrival[h] < ht[0]
                                                  or (arrival[h] == ht[0] and h < hi[0])):
                r, t, head = h, arrival[h], True
            elif hn[0] > 0:
                r, t, head = hi[0], ht[0], False
            else:
                r, t, head = NONE, np.inf, False
            if not closed or attempt == 1:
                break
            # every pass starting before t, in start order over the cluster (a run of identical
            # decode passes at its last pass's start): a completion releases its session's next turn
            while True:
                best = NONE
                bk = t
                for q in range(n_inst):
                    if pend[q]:
                        kq = _run_last(clock, pend_k, pend_dt, pend_a, q)
                    elif n_run[q] > 0 or whead[q] != NONE:
                        kq = clock[q]
                    else:
                        continue
                    if kq < bk:
                        best, bk = q, kq
                if best == NONE:
                    break
                q = best
                m = n_run[q]
                snap[:m] = run[q, :m]
                x = whead[q]
                while x != NONE and m < max_seqs:  # those the pass may admit (and finish: one-token outputs)
                    snap[m] = x
                    m += 1
                    x = nxt[x]
                if pend[q]:
                    settle(q, pend_k[q], clock, run, n_run, free, inp, out, ctx, pre, gen, blocks, chunk, pc, first,
                           done, page, pend, pend_dt, pend_a)
                else:
                    step(q, clock, run, n_run, whead, wtail, n_wait, free, nxt, inp, out, ctx, pre, gen, blocks, chunk,
                         pc, started, first, done, preempted, coef, page, budget_tokens, max_seqs, admit_free,
                         st_dt, st_next, st_kv, st_run, st_wait, pend, pend_dt, pend_a, pend_k, npre)
                for j in range(m):
                    x = snap[j]
                    f = follower[x]
                    if done[x] == done[x] and f != NONE:
                        due = done[x] + think[f]
                        _hpush(ht, hi, hn, due, f)
                        if due < t:
                            t = due
        drain = r == NONE
        if drain and not final:
            return
        if not drain:
            if head:
                h += 1
            else:
                _hpop(ht, hi, hn)
            released[r] = t
            if cdiv(inp[r] + out[r], page) > kv_blocks:
                status[r] = DROPPED
                inst[r] = NONE
                if follower[r] != NONE:
                    _hpush(ht, hi, hn, t + think[follower[r]], follower[r])
                continue
        # bring instances up to t: every one to read its load (least-loaded, prefix-aware; closed
        # loop already did), then the one r is routed to; at the end, every one to its last pass.
        # One call site of `advance`, which is inlined (passes.py): each site is a copy of it.
        i = NONE
        for k in range(n_inst + 1):
            if k < n_inst:
                if not drain and (router == 0 or closed):
                    continue
                q = k
            elif drain:
                break
            else:
                if router == 0:
                    i = cursor[0] % n_inst  # round-robin's next instance
                    cursor[0] += 1
                else:
                    i = 0
                    for q in range(1, n_inst):
                        if n_run[q] + n_wait[q] < n_run[i] + n_wait[i]:
                            i = q
                    if router == 2 and key[r] >= 0:
                        pref = (key[r] * 2654435761) % n_inst
                        if n_run[pref] + n_wait[pref] <= 2 * (n_run[i] + n_wait[i]) + 2:
                            i = pref
                q = i
            target = drain or q == i
            advance(q, t, target, clock, run, n_run, whead, wtail, n_wait, free, nxt, inp, out, ctx, pre, gen,
                    blocks, chunk, pc, started, first, done, preempted, coef, page, budget_tokens, max_seqs,
                    admit_free, st_dt, st_next, st_kv, st_run, st_wait, pend, pend_dt, pend_a, pend_k, npre)
        if drain:
            break
        inst[r] = i
        status[r] = COMPLETED
        if n_run[i] + n_wait[i] == 0:  # an idle engine's loop wakes up: coef[IDLE_WAKE] later
            t += coef[IDLE_WAKE]
        if clock[i] < t:
            clock[i] = t
        pre[r] = inp[r]
        if whead[i] == NONE:
            whead[i] = r
        else:
            nxt[wtail[i]] = r
        wtail[i] = r
        n_wait[i] += 1
