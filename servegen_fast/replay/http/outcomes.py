"""What happens to each request of one sender's share once released, and the record of it.

A released request is written when the pool has a connection for it (its `released` time is
that write), then ends ``completed`` (a 200 event stream) or ``failed`` with an error kind:
``http_<code>``, ``timeout``, ``connection_closed``, ``connect_error``, ``stream_error`` or
``protocol_error``. Timeouts count from the first write, over all attempts. Retries (off by
default) resend a request that failed before its first token on a connect error, a closed
connection, a 429 or a 5xx; a request whose kept-alive connection turns out closed by the
server before any response byte is resent without counting as a retry. At a stop, requests
in flight are ``abandoned``, and those never written ``not_released``.
"""
from __future__ import annotations

import collections
import math

import numpy as np

from ..timing import CLOCK
from .pool import Pool
from .stream import _Conn, _Req

RETRY_KINDS = ("connect_error", "connection_closed", "http_429", "http_5xx")
STATS_EVERY = 0.25  # seconds between a sender's snapshots (merged across workers on this grid)


class Outcomes:
    """The requests of one sender (indexed 0..n-1 in its share) from release to their end."""

    def __init__(self, n: int, pool: Pool, *, chat: bool, timeout: float, retries: int):
        self.pool = pool
        pool.owner = self
        self.chat, self.timeout, self.retries = chat, timeout, retries
        self.t0 = CLOCK()  # the run start, set by the sender once known
        nan = np.full(n, np.nan)
        self.released, self.first, self.completed = nan.copy(), nan.copy(), nan.copy()
        self.generated = np.zeros(n, np.int64)
        self.http_status = np.zeros(n, np.int32)
        self.server_in = np.full(n, -1, np.int64)
        self.server_cached = np.full(n, -1, np.int64)
        self.attempts = np.zeros(n, np.int32)
        self.status = ["not_released"] * n
        self.error: list = [None] * n
        self.kind: list = [None] * n
        self.itl: list = [None] * n
        self.deadline = np.full(n, np.inf)
        self.inflight: collections.deque = collections.deque()  # in release order (deadlines in order)
        self.active = 0  # released and not ended
        self.sent = 0  # requests written at least once
        self.done = 0  # requests ended (completed or failed)
        self.stopped = False  # a stop was asked: no more releases or retries
        self._pending: dict = {}  # request bytes of the requests in flight (for retries)
        self.on_end = None  # called (i, end time from t0) when a request completes or fails (closed loop)

    def release(self, i: int, data: bytes) -> None:
        req = _Req(i, self.chat)
        self.status[i] = "in_flight"
        self.active += 1
        self.inflight.append(req)
        self._pending[i] = data
        self.pool.submit(req, data)

    def write(self, conn: _Conn, req: _Req, data: bytes) -> None:
        """The pool has a connection for `req`: send it now (the first write stamps the release)."""
        now = CLOCK()
        i = req.i
        if req.attempt == 0 and math.isnan(self.released[i]):
            self.sent += 1
            self.released[i] = now - self.t0
            self.deadline[i] = now + self.timeout
        req.attempt += 1
        self.attempts[i] = req.attempt
        conn.send(req, data)

    def on_response_end(self, req: _Req, now: float) -> None:
        i = req.i
        if self.status[i] != "in_flight":
            return
        code = req.status_code
        if code != 200:
            return self.on_failure(req, f"http_{code}", f"HTTP {code}: {req.error_message()}", now)
        if req.sse is None:
            return self.on_failure(req, "protocol_error", "the response is not an event stream "
                                   f"(content-type is not text/event-stream): {req.error_message()[:200]}", now)
        if req.stream_error:
            return self.on_failure(req, "stream_error", req.stream_error, now)
        self._record(req, now)
        self.status[i] = "completed"
        self._finish(i)

    def on_failure(self, req: _Req, kind: str, msg: str, now: float, reused: bool = False) -> None:
        i = req.i
        if self.status[i] != "in_flight":
            return
        if kind == "connect_error":  # a failed connection is an attempt (else a request never written
            req.attempt += 1        # would be retried forever while a server is down)
            self.attempts[i] = req.attempt
        if req.conn is not None and req.conn.req is req:  # mid-response (a timeout): drop the connection
            req.conn.req = None
            req.conn.close()
        retry_kind = "http_5xx" if kind.startswith("http_5") else kind
        if (reused or (retry_kind in RETRY_KINDS and req.attempt <= self.retries)) and not req.events \
                and self.deadline[i] - now > 0 and not self.stopped and kind != "timeout":
            if reused:  # a kept-alive connection the server had closed: resend, not counted as a retry
                req.attempt -= 1
            data = self._pending.get(i)
            if data is not None:
                req.reset()
                self.pool.submit(req, data)
                return
        self._record(req, now)
        self.status[i] = "failed"
        self.kind[i] = kind
        self.error[i] = msg
        self.completed[i] = now - self.t0  # a failed request's `completed` is when it failed
        self._finish(i)

    def expire(self, now: float) -> None:
        """Fail the requests past their deadline (the oldest releases come first)."""
        dq = self.inflight
        while dq:
            req = dq[0]
            i = req.i
            if self.status[i] != "in_flight":
                dq.popleft()
            elif now >= self.deadline[i]:
                dq.popleft()
                if req.conn is None:  # still waiting for a connection
                    self.pool.unqueue(req, self._pending.get(i))
                self.on_failure(req, "timeout", f"no complete response within {self.timeout:g} s "
                                f"({req.events} token events received)", now)
            else:
                break

    def abandon(self) -> None:
        """At the end of a run: what is still in flight is abandoned, or not released if never written."""
        for req in list(self.inflight) + [r for r, _ in self.pool.waiting]:
            i = req.i
            if self.status[i] == "in_flight":
                self.active -= 1
                if math.isnan(self.released[i]):  # still waiting for a connection: never sent
                    self.status[i] = "not_released"
                    continue
                self.status[i], self.error[i], self.kind[i] = "abandoned", "in flight when the replay stopped", "abandoned"
                if req.conn is not None:
                    req.conn.req = None
                    req.conn.close()

    def result(self) -> dict:
        return {"released": self.released, "first_token": self.first, "completed": self.completed,
                "generated": self.generated, "http_status": self.http_status, "server_input_tokens": self.server_in,
                "server_cached_tokens": self.server_cached, "attempts": self.attempts, "status": self.status, "error": self.error, "error_kind": self.kind,
                "itl": self.itl}

    def _record(self, req: _Req, now: float) -> None:
        i = req.i
        self.http_status[i] = req.status_code
        self.first[i] = req.first - self.t0
        self.completed[i] = (req.last if req.events else now) - self.t0
        self.generated[i] = req.usage_out if isinstance(req.usage_out, int) else req.events
        if isinstance(req.usage_in, int):
            self.server_in[i] = req.usage_in
        if isinstance(req.usage_cached, int):
            self.server_cached[i] = req.usage_cached
        self.itl[i] = req.gaps

    def _finish(self, i: int) -> None:
        self.active -= 1
        self.done += 1
        self._pending.pop(i, None)
        if self.on_end is not None:
            self.on_end(i, self.completed[i])


def result_arrays(n: int) -> dict:
    """Empty per-request result arrays of n requests (what `Outcomes.result` and a sender give)."""
    return {"scheduled": np.full(n, np.nan), "released": np.full(n, np.nan), "first_token": np.full(n, np.nan),
            "completed": np.full(n, np.nan), "generated": np.zeros(n, np.int64), "http_status": np.zeros(n, np.int32),
            "server_input_tokens": np.full(n, -1, np.int64), "server_cached_tokens": np.full(n, -1, np.int64),
            "attempts": np.zeros(n, np.int32)}


def merge(n: int, results: list, shares: list) -> dict:
    """One dict of per-request arrays indexed like the plan, from workers that took the plan
    positions `shares[w]`; their snapshots summed on the STATS_EVERY grid."""
    out = result_arrays(n)
    lists = {"status": [None] * n, "error": [None] * n, "error_kind": [None] * n, "itl": [None] * n}
    stats: dict = {}
    for wid, r in enumerate(results):
        idx = shares[wid]
        for k in out:
            out[k][idx] = r[k]
        for k in lists:
            for j, v in zip(idx.tolist(), r[k]):
                lists[k][j] = v
        for t, s in r["stats"]:
            key = round(t / STATS_EVERY)
            acc = stats.setdefault(key, {"time": t})
            for name, v in s.items():
                acc[name] = acc.get(name, 0) + v
    out.update(lists)
    out["stats"] = [(v.pop("time"), v) for _, v in sorted(stats.items())]
    out["end"] = max(r["end"] for r in results)
    out["t0"] = results[0]["t0"]  # the run start on perf_counter (one for every worker)
    return out
