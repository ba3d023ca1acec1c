"""HTTP replay from N Ray actors: shares by client, one agreed start, results merged by rows.

`RaySend(address, workers, targets, tolerance)` has the signature of
`replay.http.workers.send_plan`, so `replay.api.replay_http(..., send=RaySend(...))` plans,
probes and writes results exactly as a single-machine replay does:

1. Shares: every client's requests go to one actor (so a client's sessions never span two
   senders), clients dealt greedily by request count, largest first (ties by id): the same
   trace gives the same shares. Actor k talks to target k mod len(targets).
2. Start: each actor warms its connections; the driver then measures each one's clock offset
   (the probe with the shortest round trip of PROBES), reports it, and refuses to start if
   any |offset| exceeds `tolerance`; else all release from one wall-clock time START_DELAY
   ahead, each shifted by its measured offset.
3. Results: each actor returns its raw per-request rows; the driver concatenates them and
   puts each row back at its plan index (no resampling), so the summary's percentiles are
   those of every request. A lost actor's requests are `not_released`, with the reason, and
   the run is marked incomplete.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..replay.http.options import probe
from .cluster import connect
from .senders import SenderActor

PROBES = 7
START_DELAY = 1.0  # s between "all ready" and the start: room for the start messages to arrive
DEFAULT_TOLERANCE = 0.005  # s of clock offset between the driver and a sender


def client_shares(client_id: np.ndarray, workers: int) -> list[np.ndarray]:
    """Plan positions for each of `workers` senders; each client entirely in one share."""
    clients, inverse, counts = np.unique(client_id, return_inverse=True, return_counts=True)
    order = np.lexsort((clients, -counts))  # largest first, then by id
    load = np.zeros(workers, np.int64)
    owner = np.empty(len(clients), np.int64)
    for c in order.tolist():
        k = int(np.argmin(load))
        owner[c] = k
        load[k] += counts[c]
    who = owner[inverse]
    return [np.flatnonzero(who == k) for k in range(workers)]


def _part(plan, idx: np.ndarray) -> dict:
    return plan.part(idx)


def measure_offset(ray, actor) -> tuple[float, float]:
    """(offset, round trip) in s: the actor's clock minus the driver's, from the probe with the
    shortest round trip (its error is at most half that round trip)."""
    best = (0.0, float("inf"))
    for _ in range(PROBES):
        a = time.time()
        there = ray.get(actor.now.remote())
        b = time.time()
        if b - a < best[1]:
            best = (there - (a + b) / 2, b - a)
    return best


class RaySend:
    """`send_plan` over Ray actors (see the module docstring)."""

    def __init__(self, address: str | None = None, workers: int = 2, targets: list[str] | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, log=None, ready_timeout: float = 120.0):
        if workers < 1:
            raise ValueError("--workers must be >= 1")
        if not tolerance > 0:
            raise ValueError("--clock-tolerance must be > 0")
        self.address, self.workers, self.targets = address, workers, list(targets or [])
        self.tolerance, self.ready_timeout = tolerance, ready_timeout
        self.log = log or (lambda msg: None)
        self.offsets: list[dict] = []
        self.actors: list = []  # the running senders (tests stop one to check a lost sender)

    def __call__(self, plan, options, meta, *, should_stop=lambda: False, on_start=None, progress=None) -> dict:
        ray = connect(self.address)
        n = len(plan)
        workers = max(1, min(self.workers, len(np.unique(plan.client_id))))
        shares = client_shares(plan.client_id, workers)
        targets = self.targets or [options.target]
        for t in targets:  # replay_http probed the first; each must answer before anything is sent
            if t != options.target:
                probe(dataclasses.replace(options, target=t))
        per = max(1, -(-options.concurrency // workers))
        cls = ray.remote(num_cpus=1, max_concurrency=4, max_restarts=0)(SenderActor)
        actors = [cls.options(scheduling_strategy="SPREAD").remote(
            _part(plan, idx), dataclasses.replace(options, target=targets[k % len(targets)]), meta, per)
            for k, idx in enumerate(shares)]
        self.actors = actors
        runs = [a.run.remote() for a in actors]
        try:
            try:
                self._start(ray, actors, runs, on_start)
            except ray.exceptions.RayError as e:
                raise RuntimeError(f"a sender failed before the start (nothing was sent): {_first_line(e)}") from None
            results, lost = self._collect(ray, actors, runs, should_stop)
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)
        return _merge(n, shares, results, lost, self.offsets, time.time())

    def _start(self, ray, actors, runs, on_start) -> None:
        end = time.monotonic() + self.ready_timeout
        for k, a in enumerate(actors):
            while True:
                ref = a.wait_ready.remote(1.0)
                done, _ = ray.wait([ref, runs[k]], num_returns=1, timeout=max(0.1, end - time.monotonic()))
                if runs[k] in done:
                    ray.get(runs[k])  # raises the actor's error
                if ref in done and ray.get(ref):
                    break
                if time.monotonic() > end:
                    raise TimeoutError(f"sender {k} not ready after {self.ready_timeout:.0f} s "
                                       f"(no free CPU on the cluster for {len(actors)} senders?)")
        self.offsets = []
        for k, a in enumerate(actors):
            off, rtt = measure_offset(ray, a)
            node = ray.get(a.node.remote())
            self.offsets.append({"sender": k, "node": node, "offset_s": off, "round_trip_s": rtt})
            self.log(f"sender {k} on node {node[:8]}: clock offset {off * 1e3:+.3f} ms "
                     f"(round trip {rtt * 1e3:.3f} ms)")
        worst = max(self.offsets, key=lambda o: abs(o["offset_s"]))
        if abs(worst["offset_s"]) > self.tolerance:
            for a in actors:
                a.stop.remote()
            raise RuntimeError(f"sender {worst['sender']}'s clock is {worst['offset_s'] * 1e3:+.3f} ms off the "
                               f"driver's, past the tolerance of {self.tolerance * 1e3:.3f} ms: synchronise the "
                               f"nodes' clocks (NTP/PTP) or raise --clock-tolerance; nothing was sent")
        if on_start is not None:
            on_start()
        at = time.time() + START_DELAY
        for a, o in zip(actors, self.offsets):
            a.start.remote(at + o["offset_s"])

    def _collect(self, ray, actors, runs, should_stop):
        results: list = [None] * len(runs)
        lost: dict[int, str] = {}
        left = dict(zip(runs, range(len(runs))))
        stopping = False
        while left:
            if should_stop() and not stopping:
                stopping = True
                for k in left.values():
                    actors[k].stop.remote()
            done, _ = ray.wait(list(left), num_returns=1, timeout=0.2)
            for ref in done:
                k = left.pop(ref)
                try:
                    results[k] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    lost[k] = f"sender {k} lost: {_first_line(e)}"
                    self.log(lost[k])
        return results, lost


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    err = cause if isinstance(cause, BaseException) else e
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


def _merge(n: int, shares, results, lost, offsets, wall_end) -> dict:
    """Per-request arrays indexed like the plan: the actors' rows concatenated, then placed by
    plan index (a permutation); a lost actor's rows are `not_released` with the reason."""
    from ..replay.http.outcomes import STATS_EVERY, result_arrays

    got = [k for k, r in enumerate(results) if r is not None]
    idx = np.concatenate([shares[k] for k in got]) if got else np.zeros(0, np.int64)
    out = result_arrays(n)
    for key, arr in out.items():
        if got:
            arr[idx] = np.concatenate([np.asarray(results[k][key]) for k in got])
    lists = {key: [None] * n for key in ("status", "error", "error_kind", "itl")}
    for key, col in lists.items():
        flat = [v for k in got for v in results[k][key]]
        for j, v in zip(idx.tolist(), flat):
            col[j] = v
    for k, why in lost.items():
        for j in shares[k].tolist():
            lists["status"][j], lists["error"][j], lists["error_kind"][j] = "not_released", why, "sender_lost"
    out.update(lists)
    stats: dict = {}
    for k in got:
        for t, s in results[k]["stats"]:
            acc = stats.setdefault(round(t / STATS_EVERY), {"time": t})
            for name, v in s.items():
                acc[name] = acc.get(name, 0) + v
    out["stats"] = [(v.pop("time"), v) for _, v in sorted(stats.items())]
    out["end"] = max((results[k]["end"] for k in got), default=0.0)
    out["t0"] = 0.0
    out["clock"] = {"name": "time.time (per sender, offset-corrected)", "senders": offsets}
    out["incomplete"] = bool(lost)
    out["lost"] = sorted(lost.values())
    return out
