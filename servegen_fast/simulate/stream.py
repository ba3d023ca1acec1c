"""The event loop over a trace in chunks (partitions, record batches), its state carried from
one chunk to the next: the same results as one run over the whole trace, with the loop's
per-request state held only for the chunk's requests and those still queued or running.

The loop does work only when a request arrives (or at the end), so stopping it after a chunk's
last arrival (`simulate_kernel(..., final=False)`) leaves exactly the state the whole run has
at that point; the next chunk's requests are numbered first and the carried ones after them
(arrival inf: they have arrived), and the instances' queues and batches are renumbered to
match. Open loop without prefix reuse only: a session's next turn may come from a later chunk,
and the prefix cache's per-request segments are not carried (cluster.py loads those traces whole).
"""
from __future__ import annotations

import numpy as np

from ..kernels.config import njit
from .kernel import ROUTERS, simulate_kernel, work_arrays
from .passes import NONE
from .profile import Profile

# per-request kernel arrays, in the order `feed` keeps them: inputs, then results
_INPUTS = ("inp", "out", "key")
RESULTS = ("inst", "started", "first", "done", "gen", "preempted", "status", "released")
_STATE = (12, 13, 14, 15, 16)  # work arrays per request: nxt, ctx, pre, blocks, chunk


class Stream:
    """Feed arrivals chunk by chunk (each chunk in time order, after the previous one); each
    `feed` returns the requests it finished, by the global ids given with them."""

    def __init__(self, profile: Profile, instances: int, router: str, st_dt: float, n_stats: int, seed: int = 0):
        if router == "prefix-aware":
            raise ValueError("a streamed simulation supports round-robin and least-loaded only")
        self.profile, self.n_inst, self.router, self.st_dt = profile, int(instances), ROUTERS[router], float(st_dt)
        self.seqs = min(profile.max_seqs, profile.max_batch_tokens)
        self.coef = profile.coef_array(seed)
        self.admit = int(np.ceil(profile.admit_free_fraction * profile.kv_blocks))
        self.work = list(work_arrays(0, self.n_inst, self.seqs, profile.kv_blocks))
        self.stats = tuple(np.zeros(n_stats, np.int64) for _ in range(3))
        self.carry = {name: a[:0] for name, a in self.columns(0).items()}
        self.carry_state = [self.work[k] for k in _STATE]
        self.carry_gid = np.zeros(0, np.int64)
        self.last = -np.inf

    @staticmethod
    def columns(n: int, names=_INPUTS + RESULTS) -> dict:
        """Fresh per-request arrays (inputs and results) of n requests, by name."""
        make = {"inp": lambda: np.zeros(n, np.int64), "out": lambda: np.zeros(n, np.int64),
                "key": lambda: np.full(n, -1, np.int64), "inst": lambda: np.zeros(n, np.int64),
                "started": lambda: np.full(n, np.nan), "first": lambda: np.full(n, np.nan),
                "done": lambda: np.full(n, np.nan), "gen": lambda: np.zeros(n, np.int64),
                "preempted": lambda: np.zeros(n, np.uint8), "status": lambda: np.full(n, -1, np.int8),
                "released": lambda: np.full(n, np.nan)}
        return {name: make[name]() for name in names}

    def feed(self, gid, arrival, inp, out, final: bool = False) -> dict:
        """Requests `gid` arrive at `arrival` (sorted, not before the previous chunk's last);
        run the loop up to the last of them (`final`: to the end). Returns the finished
        requests' results: gid and the columns of `RESULTS`."""
        arrival = np.asarray(arrival, np.float64)
        if len(arrival) and (arrival[0] < self.last or np.any(np.diff(arrival) < 0)):
            raise ValueError("streamed arrivals must be in time order across chunks")
        if len(arrival):
            self.last = float(arrival[-1])
        k, m = len(arrival), len(self.carry_gid)
        n = k + m
        req = self.columns(k)
        req["inp"][:] = inp
        req["out"][:] = out
        req = {name: np.concatenate([req[name], self.carry[name]]) for name in req}
        gid = np.concatenate([np.asarray(gid, np.int64), self.carry_gid])
        # carried requests become k .. n-1 (their old numbers were 0 .. m-1, in carry order)
        work = self.work
        work[12:17] = [np.concatenate([np.full(k, NONE if j == 12 else 0, np.int64), a])
                       for j, a in zip(_STATE, self.carry_state)]
        _shift(work, k)
        work[17], work[18] = np.empty(n), np.empty(n, np.int64)
        p = self.profile
        simulate_kernel(np.concatenate([arrival, np.full(m, np.inf)]), np.full(n, NONE, np.int64), np.zeros(n),
                        req["inp"], req["out"], req["key"], self.router, self.n_inst, self.coef, p.page_size,
                        p.kv_blocks, p.max_batch_tokens, self.seqs, self.admit, self.st_dt, req["inst"],
                        req["started"], req["first"], req["done"], req["gen"], req["preempted"], req["status"],
                        req["released"], *self.stats, None, tuple(work), final)
        live = _in_flight(work, n)
        done = np.ones(n, bool)
        done[live] = False
        out = {"gid": gid[done], **{name: req[name][done] for name in RESULTS}}
        # carry the live ones, renumbered 0 .. len(live)-1 in the order of `live`
        self.carry = {name: a[live] for name, a in req.items()}
        self.carry_gid = gid[live]
        new = np.full(n + 1, NONE, np.int64)  # new[old] (new[-1]: NONE stays NONE)
        new[live] = np.arange(len(live))
        self.carry_state = [work[j][live] for j in _STATE]
        self.carry_state[0] = new[self.carry_state[0]]
        run = work[1]
        work[1] = np.where(run >= 0, new[run], NONE)
        work[3], work[4] = new[work[3]], new[work[4]]
        return out


def _shift(work: list, k: int) -> None:
    """Renumber the instances' batches and queues (and queue links) by +k."""
    run = work[1]
    work[1] = np.where(run >= 0, run + k, NONE)
    work[3] = np.where(work[3] >= 0, work[3] + k, NONE)
    work[4] = np.where(work[4] >= 0, work[4] + k, NONE)
    nxt = work[12]
    work[12] = np.where(nxt >= 0, nxt + k, NONE)


def _in_flight(work: list, n: int) -> np.ndarray:
    """Numbers of the requests in an instance's batch or queue, batches first, each queue in order."""
    return _live(work[1], work[2], work[3], work[5], work[12])


@njit
def _live(run, n_run, whead, n_wait, nxt):
    out = np.empty(n_run.sum() + n_wait.sum(), np.int64)
    k = 0
    for q in range(n_run.shape[0]):
        for j in range(n_run[q]):
            out[k] = run[q, j]
            k += 1
    for q in range(whead.shape[0]):
        x = whead[q]
        while x != NONE:
            out[k] = x
            k += 1
            x = nxt[x]
    return out
