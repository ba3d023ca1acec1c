"""The keep-alive connections of one sender, and the requests waiting for one.

At most `limit` connections are open or opening. A request released while none is idle waits
in order for the next one that opens or comes back (its wait shows as lateness, since its
release is stamped when it is written). SPARE idle connections are kept open ahead of need,
and idle ones are closed after IDLE_CLOSE, before servers drop them.
"""
from __future__ import annotations

import asyncio
import collections

from ..timing import CLOCK
from .options import Endpoint
from .stream import _Conn, _Req

SPARE = 8  # keep this many idle connections open ahead of need (up to the limit)
IDLE_CLOSE = 4.0  # close connections idle this long (servers drop idle keep-alives at ~5 s)


class Pool:
    """Connections to one endpoint on the running event loop. `owner` (the sender's `Outcomes`,
    which sets it) is given a connection for a request with `write(conn, req, data)`, learns of a
    connect error through `on_failure`, and is told by each connection how its request ended."""

    def __init__(self, endpoint: Endpoint, limit: int, connect_timeout: float):
        self.ep = endpoint
        self.limit = max(1, int(limit))
        self.connect_timeout = connect_timeout
        self.owner = None
        self.loop = None
        self.idle: collections.deque = collections.deque()
        self.open = 0  # connections open or opening
        self.connecting = 0
        self.waiting: collections.deque = collections.deque()  # (req, data) waiting for a connection
        self.ssl = None
        if endpoint.scheme == "https":
            import ssl

            self.ssl = ssl.create_default_context()

    async def warm(self, timeout: float = 10.0) -> None:
        """Open the spare connections and wait for them, before the clock starts (failures here
        are reported by the requests that would have used them)."""
        self.loop = asyncio.get_running_loop()
        for _ in range(min(SPARE, self.limit)):
            self._open_one()
        deadline = CLOCK() + timeout
        while self.open and len(self.idle) < min(SPARE, self.limit) and CLOCK() < deadline:
            await asyncio.sleep(0.005)

    def submit(self, req: _Req, data: bytes) -> None:
        """Write `data` for `req` on an idle connection, or queue it for the next one."""
        conn = self._take()
        if conn is not None:
            self.owner.write(conn, req, data)
        else:
            self.waiting.append((req, data))
            self._serve_waiters()
        self._top_up()

    def unqueue(self, req: _Req, data: bytes) -> None:
        try:
            self.waiting.remove((req, data))
        except ValueError:
            pass

    def give_back(self, conn: _Conn) -> None:
        """A connection whose response ended with the connection kept alive."""
        while self.waiting:
            req, data = self.waiting.popleft()
            if req.conn is None and self.owner.status[req.i] == "in_flight":
                self.owner.write(conn, req, data)
                return
        conn.idle_since = CLOCK()
        self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        self.open -= 1
        if conn.req is None and conn in self.idle:
            self.idle.remove(conn)
        self._serve_waiters()  # a busy connection lost (a server gone): its slot serves the queue

    def close_idle(self, now: float, older_than: float = IDLE_CLOSE) -> None:
        while self.idle and now - self.idle[0].idle_since > older_than:
            self.idle.popleft().close()

    def close_all_idle(self) -> None:
        for c in list(self.idle):
            c.close()

    def _open_one(self) -> None:
        self.open += 1
        self.connecting += 1
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Conn(self, self.owner), self.ep.host, self.ep.port, ssl=self.ssl),
                timeout=self.connect_timeout)
        except asyncio.CancelledError:
            self.connecting -= 1
            raise
        except (OSError, asyncio.TimeoutError) as e:
            self.open -= 1
            self.connecting -= 1
            if self.waiting:  # a request waiting for this connection fails (it is retried where allowed)
                req, _ = self.waiting.popleft()
                self.owner.on_failure(req, "connect_error", f"cannot connect to {self.ep.host}:{self.ep.port}: "
                                      f"{e or type(e).__name__}", CLOCK())
            self._serve_waiters()  # the next waiter tries (and fails fast, if the server is gone)
            return
        self.connecting -= 1
        self.give_back(conn)

    def _serve_waiters(self) -> None:
        """Every waiting request has a connection opening for it, up to the limit: a waiter is
        never left without one on its way (connections free up, open or fail, which ends it)."""
        if self.loop is None:
            return
        for _ in range(min(len(self.waiting) - self.connecting, self.limit - self.open)):
            self._open_one()

    def _take(self) -> _Conn | None:
        while self.idle:
            c = self.idle.pop()  # most recently used first
            if not c.closed:
                return c
        return None

    def _top_up(self) -> None:
        """Keep SPARE connections idle or opening beyond the requests waiting for one (up to the limit)."""
        need = SPARE + len(self.waiting) - len(self.idle) - self.connecting
        for _ in range(min(need, self.limit - self.open)):
            self._open_one()
