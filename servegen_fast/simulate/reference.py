"""A plain-Python twin of the compiled event loop (`kernel.py`), written for clarity: one pass
at a time, no batching of identical decode passes, Python lists and objects. It is the tests'
oracle (the kernel must give the same times) and the speed benchmark's baseline. Same model,
same routing, same preemption rules; see kernel.py for them."""
from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque

import numpy as np

from .kernel import COMPLETED, DROPPED, ROUTERS
from .passes import IDLE_WAKE, SEED, SPREAD

_MASK, _GOLD, _SEED_MUL = (1 << 64) - 1, 0x9E3779B97F4A7C15, 0xD1B54A32D192ED03


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def spread_factor(coef, i: int, k: int) -> float:
    """passes.spread_factor in Python integers: the factor of instance i's k-th pass with a prefill."""
    n = int(coef[SPREAD])
    if n < 2:
        return 1.0
    key = _mix((i * _GOLD + 1 + int(coef[SEED]) * _SEED_MUL) & _MASK)
    h = _mix((key + (k + 1) * _GOLD) & _MASK)
    u = float(h >> 11) * (1.0 / 9007199254740992.0)
    x = u * (n - 1)
    j = int(x)
    a = float(coef[SPREAD + 1 + j])
    return a + (x - j) * (float(coef[SPREAD + 2 + j]) - a)


class _Req:
    __slots__ = ("r", "inp", "out", "ctx", "pre", "gen", "blocks", "chunk", "ids", "nreg")

    def __init__(self, r, inp, out, ids):
        self.r, self.inp, self.out, self.ids = r, inp, out, ids
        self.ctx, self.pre, self.gen, self.blocks, self.chunk, self.nreg = 0, inp, 0, 0, 0, 0


class _Instance:
    """An engine's queue, batch and KV blocks; its prefix cache: references per cached block id,
    and the unreferenced ones (free, evictable) least recently released first."""

    def __init__(self, index, kv_blocks, page):
        self.index, self.npre = index, 0  # npre: passes with a prefill so far
        self.clock = 0.0
        self.running: list[_Req] = []
        self.waiting: deque[_Req] = deque()
        self.free, self.page = kv_blocks, page
        self.refs: dict = {}
        self.lru: OrderedDict = OrderedDict()

    def busy(self):
        return bool(self.running or self.waiting)

    def hits(self, x):
        h = 0
        while h < min((x.inp - 1) // self.page, len(x.ids)) and x.ids[h] in self.refs:
            h += 1
        return h, sum(self.refs[k] == 0 for k in x.ids[:h])

    def acquire(self, x, h):
        for k in x.ids[:h]:
            if self.refs[k] == 0:
                del self.lru[k]
                self.free -= 1
            self.refs[k] += 1
        x.nreg = h

    def take(self, need):
        for _ in range(need - (self.free - len(self.lru))):
            del self.refs[self.lru.popitem(last=False)[0]]
        self.free -= need

    def release(self, x):
        for k in reversed(x.ids[:x.nreg]):
            self.refs[k] -= 1
            if self.refs[k] == 0:
                self.lru[k] = None
                self.free += 1
        self.free += x.blocks - x.nreg
        x.blocks, x.nreg = 0, 0

    def register(self, x):
        for k in x.ids[x.nreg:min(min(x.ctx, x.inp) // self.page, len(x.ids))]:
            if k in self.refs:  # cached meanwhile: share it, give back the own copy
                if self.refs[k] == 0:
                    del self.lru[k]
                    self.free -= 1
                self.refs[k] += 1
                self.free += 1
            else:
                self.refs[k] = 1
            x.nreg += 1


def simulate_reference(arrival, inp, out, coef, page, kv_blocks, budget_tokens, max_seqs, admit_free, *,
                       instances=1, router="round-robin", key=None, follower=None, think=None,
                       blocks=None):
    """Per-request (instance, released, started, first_token, completed, generated, preempted,
    status). Closed loop: `follower[r]` is the plan position of r's session's next turn (-1:
    none); it arrives `think[follower]` after r completes or is dropped (its `arrival` unused).
    Prefix reuse: `blocks` = (offsets, ids) of each request's prompt blocks (at `page` tokens)."""
    n = len(arrival)
    res = {"instance": np.zeros(n, np.int64), "released": np.full(n, np.nan),
           "started": np.full(n, np.nan), "first_token": np.full(n, np.nan),
           "completed": np.full(n, np.nan), "generated": np.zeros(n, np.int64), "preempted": np.zeros(n, bool),
           "status": np.zeros(n, np.int8), "cached": np.full(n, -1, np.int64)}
    insts = [_Instance(k, kv_blocks, page) for k in range(instances)]
    code = ROUTERS[router]

    def step(q: _Instance):
        s = q.clock
        while True:
            budget, P, S, D, K, A, nsched, failed = budget_tokens, 0, 0, 0, 0, 0, 0, False
            for x in q.running:
                x.chunk = 0
                if x.pre == 0:
                    need = math.ceil((x.ctx + 1) / page) - x.blocks
                    if need > q.free:
                        failed = True
                        continue
                    q.take(need)
                    x.blocks += need
                    x.chunk, D, K, budget, nsched = 1, D + 1, K + x.ctx + 1, budget - 1, nsched + 1
            stop = False
            for x in q.running:
                if x.pre == 0 or budget == 0:
                    continue
                if q.free < admit_free and nsched > 0:
                    stop = True
                    break
                c = min(x.pre, budget)
                need = math.ceil((x.ctx + c) / page) - x.blocks
                if need > q.free:
                    failed = True
                    continue
                q.take(need)
                x.blocks += need
                x.chunk, P, S, K, budget, nsched = c, P + c, S + 1, K + x.ctx + c, budget - c, nsched + 1
                A += c * (x.ctx + c)
            while not stop and budget > 0 and q.waiting and len(q.running) < max_seqs:
                if q.free < admit_free and nsched > 0:
                    break
                x = q.waiting[0]
                h, ev = q.hits(x)
                c = min(x.pre - h * page, budget)
                need = math.ceil((h * page + c) / page) - h
                if need + ev > q.free:
                    failed = True
                    break
                q.waiting.popleft()
                q.running.append(x)
                if math.isnan(res["started"][x.r]):
                    res["started"][x.r] = s
                if h:
                    q.acquire(x, h)
                    x.ctx, x.pre, x.blocks = h * page, x.pre - h * page, h
                if res["cached"][x.r] < 0:
                    res["cached"][x.r] = h * page
                q.take(need)
                x.blocks += need
                x.chunk, P, S, K, budget, nsched = c, P + c, S + 1, K + x.ctx + c, budget - c, nsched + 1
                A += c * (x.ctx + c)
            victims = []
            for x in reversed(q.running):
                if (x.chunk == 0 and x.pre == 0 and failed) or (nsched == 0 and not victims and failed):
                    victims.append(x)
            for x in victims:  # latest admitted first, each pushed to the queue's head
                q.release(x)
                x.pre, x.ctx = x.inp + x.gen, 0
                res["preempted"][x.r] = True
                q.waiting.appendleft(x)
                q.running.remove(x)
            if nsched > 0:
                break
        dt = coef[0] + coef[1] * P + coef[2] * S + coef[3] * D
        if P > 0:
            dt += coef[6] + coef[8] * K + coef[5] * (P + D) * K + coef[7] * A
            dt *= spread_factor(coef, q.index, q.npre)
            q.npre += 1
        else:
            dt += coef[4] * K
            if D > 1:
                dt += coef[9] + coef[10] * K
        end = s + dt
        kept = []
        for x in q.running:
            if x.chunk > 0:
                x.ctx += x.chunk
                if x.pre == 0:
                    x.gen += 1
                else:
                    x.pre -= x.chunk
                    q.register(x)
                    if x.pre == 0:
                        x.gen += 1
                        if math.isnan(res["first_token"][x.r]):
                            res["first_token"][x.r] = end
                x.chunk = 0
                if x.pre == 0 and x.gen >= x.out:
                    res["completed"][x.r] = end
                    res["generated"][x.r] = x.gen
                    q.release(x)
                    continue
            kept.append(x)
        q.running = kept
        q.clock = end

    follower = np.full(n, -1, np.int64) if follower is None else np.asarray(follower, np.int64)
    closed = bool((follower >= 0).any())
    later = np.zeros(n, bool)
    later[follower[follower >= 0]] = True
    heap = [(float(arrival[r]), r) for r in range(n) if not later[r]]
    heapq.heapify(heap)
    rr = 0
    while True:
        t, r = heap[0] if heap else (math.inf, -1)
        while closed:  # every pass starting before t, earliest start first (ties: lowest instance)
            ready = [(q.clock, k) for k, q in enumerate(insts) if q.busy() and q.clock < t]
            if not ready:
                break
            q = insts[min(ready)[1]]
            before = list(q.running) + list(q.waiting)
            step(q)
            for x in before:
                f = int(follower[x.r])
                if f >= 0 and not math.isnan(res["completed"][x.r]):
                    heapq.heappush(heap, (float(res["completed"][x.r] + think[f]), f))
            t, r = heap[0] if heap else (math.inf, -1)
        if r < 0:
            break
        heapq.heappop(heap)
        res["released"][r] = t
        if math.ceil((inp[r] + out[r]) / page) > kv_blocks:
            res["status"][r], res["instance"][r] = DROPPED, -1
            if follower[r] >= 0:
                heapq.heappush(heap, (t + float(think[follower[r]]), int(follower[r])))
            continue
        if code == 0:
            targets = [rr % instances]
            rr += 1
        else:
            targets = range(instances)
        for i in targets:
            while insts[i].clock < t and insts[i].busy():
                step(insts[i])
        if code == 0:
            i = targets[0]
        else:
            load = [len(q.running) + len(q.waiting) for q in insts]
            i = int(np.argmin(load))
            if code == 2 and key is not None and key[r] >= 0:
                pref = (int(key[r]) * 2654435761) % instances
                if load[pref] <= 2 * load[i] + 2:
                    i = pref
        res["instance"][r], res["status"][r] = i, COMPLETED
        q = insts[i]
        q.clock = max(q.clock, t if q.busy() else t + coef[IDLE_WAKE])
        ids = [] if blocks is None else blocks[1][blocks[0][r]:blocks[0][r + 1]].tolist()
        q.waiting.append(_Req(r, int(inp[r]), int(out[r]), ids))
    for q in insts:
        while q.busy():
            step(q)
    return res
