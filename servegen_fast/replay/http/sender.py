"""One sending process of HTTP replay: its share of a plan released on one event loop.

Standard library only: keep-alive connections of a minimal HTTP/1.1 client written as an
`asyncio.Protocol` (`stream.py`), so that a release costs one `transport.write` of prebuilt
bytes; request bodies are built one ahead (`bodies.py`).

Release: `timing.release_wait` with the HTTP pacing (sleep on the loop, then yield to it,
then spin on the clock), so a request is never early. It is written at once on an idle
connection (`pool.py`), else when one frees up; its `released` time is that write, so a
connection limit or a busy loop shows as lateness, never as a silent shift. When behind,
requests go out back to back, with a turn for the loop every BURST. What happens to each
request after its release, retries and timeouts included, is `outcomes.py`'s.

Which request is next and when is `timing.Releases`': in closed loop (sessions) a turn becomes
due when the previous one ends (+ think time); a sleep before a release is cut short when a
completion makes an earlier turn due, and the next request is chosen again.
"""
from __future__ import annotations

import asyncio

from ..timing import CLOCK, HTTP, SPIN, WORK, Releases, release_wait
from .bodies import DEFAULT_VOCAB, BodyBuilder, SessionPrompts
from .options import Endpoint, HttpOptions, auth_headers
from .outcomes import STATS_EVERY, Outcomes
from .pool import Pool

TICK = 0.05  # timeout / idle sweeps and stop checks
BURST = 32  # requests released back to back (when behind) before the loop gets a turn


def _resolve(fut) -> None:
    if not fut.done():
        fut.set_result(None)


class Sender:
    """Releases its share of the requests (`part`: columns of the plan) and records what happened."""

    def __init__(self, part: dict, options: HttpOptions, meta: dict, concurrency: int, stop_flag):
        self.o = options
        self.part = part
        self.rows = part["row"]
        self.inp, self.out_tokens = part["input_tokens"], part["output_tokens"]
        self.n = len(self.rows)
        self.releases = Releases(part["scheduled"], closed=part.get("closed_loop", False),
                                 session_id=part.get("session_id"), turn=part.get("turn"),
                                 think_time=part.get("think_time"), think_scale=part.get("think_scale", 1.0))
        self._wake = None  # the future a closed-loop sleep waits on (resolved early by a new due turn)
        self._target = float("inf")
        self.stop_flag = stop_flag
        self.build = BodyBuilder(api=options.api, model=meta["model"], prompt_kind=options.prompt,
                                 server_type=options.server_type, seed=options.seed,
                                 vocab=options.vocab or meta.get("vocab_size") or DEFAULT_VOCAB,
                                 extra=options.extra_body)
        self._prompts = SessionPrompts(self.build, part, self.releases.follower) if "block_ids" in part else None
        self._row = self.rows.tolist()
        ep = Endpoint.parse(options.target)
        path = f"{ep.base}/{'chat/completions' if options.api == 'chat' else 'completions'}"
        host = ep.host if ep.port in (80, 443) else f"{ep.host}:{ep.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in auth_headers(options).items())
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Accept: text/event-stream\r\nUser-Agent: servegen-fast\r\n{extra}").encode()
        self.pool = Pool(ep, concurrency, min(options.timeout, 30.0))
        self.out = Outcomes(self.n, self.pool, chat=options.api == "chat", timeout=options.timeout,
                            retries=options.retries)
        if self.releases.closed:
            self.out.on_end = self._ended
        self.stats: list = []  # (time from t0, {in_flight, connections})
        self.t0 = self.out.t0
        self.end = 0.0

    async def run(self, t0_getter) -> None:
        """Warm the connections, learn the start time (`await t0_getter()`), release everything,
        wait for the responses (or a stop), then abandon what is left."""
        await self.pool.warm()
        self.t0 = self.out.t0 = await t0_getter()
        keeper = asyncio.get_running_loop().create_task(self._housekeeping())
        try:
            await self._send_all()
            while self.out.active and not self.out.stopped:
                await asyncio.sleep(TICK)
        finally:
            keeper.cancel()
            self.out.abandon()
            self.pool.close_all_idle()
            self.end = CLOCK() - self.t0
            await asyncio.sleep(0)  # let the transports close

    def result(self) -> dict:
        return dict(self.out.result(), scheduled=self.releases.scheduled, stats=self.stats, end=self.end, t0=self.t0)

    def _data(self, i: int) -> bytes:
        row = self._row[i]
        if self._prompts is None:
            body = self.build(row, int(self.inp[i]), int(self.out_tokens[i]))
        else:
            body = self.build.body(self._prompts(i), int(self.out_tokens[i]))
        return self.head + b"x-request-id: %d\r\nContent-Length: %d\r\n\r\n" % (row, len(body)) + body

    def _ended(self, i: int, t: float) -> None:
        """Closed loop: request i ended at t; wake the release loop if its next turn is due before the target."""
        due = self.releases.ended(i, t)
        if due is not None and self.t0 + due < self._target and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _nap(self, seconds: float) -> None:
        """Sleep on the loop for `seconds`, or until a completion makes an earlier turn due."""
        loop = asyncio.get_running_loop()
        fut = self._wake = loop.create_future()
        h = loop.call_later(seconds, _resolve, fut)
        try:
            await fut
        finally:
            h.cancel()
            self._wake = None

    async def _send_all(self) -> None:
        t0, out, pool, rel = self.t0, self.out, self.pool, self.releases
        sched = rel.scheduled
        closed = rel.closed
        sleep = asyncio.sleep
        nap = self._nap if closed else sleep
        burst = 0
        built, data = -1, b""
        while True:
            i = rel.next()
            if i is None:  # closed loop: every remaining turn waits on one in flight (or none is left)
                if not closed or out.active == 0 or out.stopped:
                    return
                self._target = float("inf")
                await nap(TICK)
                continue
            if built != i:
                built, data = i, self._data(i)
            target = self._target = t0 + sched[i]
            while (step := release_wait(target, HTTP)) is not None:
                if out.stopped:
                    return
                burst = 0
                if step[0] == SPIN:  # inline (see timing)
                    while CLOCK() < target:
                        pass
                    break
                if step[0] == WORK:
                    await nap(step[1])  # the loop reads responses meanwhile
                else:
                    await sleep(0)
                if closed and rel.next() != i:  # a completion made an earlier turn due
                    break
            if closed and rel.next() != i:
                continue
            while len(pool.waiting) >= pool.limit and not out.stopped:
                await sleep(0.001)  # every connection busy and a queue as long: hold the rest (lateness counts)
            if out.stopped:
                return
            rel.take(i)
            out.release(i, data)
            j = rel.next()
            if j is not None:
                built, data = j, self._data(j)
            burst += 1
            if burst >= BURST:  # far behind: let responses be read now and then
                burst = 0
                await sleep(0)

    async def _housekeeping(self) -> None:
        """Stop checks, timeouts, idle connections and snapshots, every TICK."""
        out, pool = self.out, self.pool
        next_stats = self.t0
        while True:
            now = CLOCK()
            if self.stop_flag():
                out.stopped = True
            out.expire(now)
            pool.close_idle(now)
            if now >= next_stats:
                self.stats.append((now - self.t0, {"in_flight": out.active, "connections": pool.open}))
                next_stats = now + STATS_EVERY
            await asyncio.sleep(TICK)
