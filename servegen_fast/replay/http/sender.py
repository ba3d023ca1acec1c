"""HTTP replay: release each request of a plan at its trace time to an OpenAI-compatible server.

One asyncio event loop per sending process, on the standard library only: keep-alive
connections of a minimal HTTP/1.1 client written as an `asyncio.Protocol` (`http_stream.py`:
Content-Length, chunked and read-until-close bodies, and a server-sent-events parser that
stamps every streamed token with `time.perf_counter`, the replayer's clock, when its bytes
arrive), so that a release costs one `transport.write` of prebuilt bytes.

Release (`_Worker._send_all`): sleep on the loop until SLEEP_MARGIN before the scheduled
time (the selector's timeout is rounded to a millisecond), then yield to the loop in a
tight cycle (responses keep being read) until SPIN before it, then spin on the clock; the
request is written once the clock has reached its time, so it is never early. The
actual write time is recorded (lateness = released − scheduled ≥ 0), so a connection limit
or a busy loop shows as lateness, never as a silent shift. When one loop cannot keep up,
`workers=N` runs N processes, each with its own loop and connections, requests
partitioned round-robin by index, all on one start time (perf_counter is system-wide).

Every request ends with a status: ``completed``, ``failed`` (with `error_kind`:
``http_<code>``, ``timeout``, ``connection_closed``, ``connect_error``, ``stream_error``,
``protocol_error``, and a message), ``abandoned`` (in flight at a stop) or ``not_released``.
Timeouts count from the first release; retries (off by default) resend a request that failed
before its first token on a connect error, a closed connection, a 429 or a 5xx.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import math
import signal
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from ..timing import CLOCK, HTTP, WORK, release_waits, show_progress
from .bodies import DEFAULT_VOCAB, BodyBuilder, resolve_prompt_kind
from .stream import _Conn, _Req

SPARE = 8  # keep this many idle connections open ahead of need (up to the limit)
IDLE_CLOSE = 4.0  # close connections idle this long (servers drop idle keep-alives at ~5 s)
TICK = 0.05  # timeout / idle sweeps and stop checks
STATS_EVERY = 0.25
RETRY_KINDS = ("connect_error", "connection_closed", "http_429", "http_5xx")


@dataclass
class HttpOptions:
    """How to talk to the target (see `bodies.py` for what a request carries)."""

    target: str  # base URL: http://host:port or http://host:port/v1
    api: str = "completions"  # completions | chat
    model: str | None = None  # the "model" field; None: the first model of GET /v1/models
    server_type: str = "vllm"  # vllm | sglang | tgi | openai: which options force output lengths
    prompt: str = "auto"  # auto | tokens | text
    vocab: int | None = None  # token ids are drawn below this (default: the server's, else 32000)
    concurrency: int = 1024  # open connections (= requests in flight) at most, over all workers
    timeout: float = 600.0  # per request, from its release to its last byte (all attempts)
    retries: int = 0
    workers: int = 1
    seed: int = 0
    api_key: str | None = None
    extra_body: dict = field(default_factory=dict)
    loop: str = "auto"  # asyncio | uvloop | auto (uvloop where installed)

    def validate(self) -> None:
        url = urllib.parse.urlsplit(self.target)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"target must be an http:// or https:// URL, got {self.target!r}")
        if self.concurrency < 1 or self.workers < 1 or self.retries < 0 or not self.timeout > 0:
            raise ValueError("concurrency and workers must be >= 1, retries >= 0, timeout > 0")
        self.prompt = resolve_prompt_kind(self.prompt, self.api, self.server_type)
        self.loop = resolve_loop(self.loop)


LOOPS = ("auto", "asyncio", "uvloop")


def resolve_loop(kind: str) -> str:
    """'auto' -> 'uvloop' where it is installed, else 'asyncio'; 'uvloop' without it is an error."""
    if kind not in LOOPS:
        raise ValueError(f"unknown event loop {kind!r}; expected one of {LOOPS}")
    if kind == "asyncio":
        return kind
    import importlib.util

    if importlib.util.find_spec("uvloop") is None:
        if kind == "uvloop":
            raise ValueError("--loop uvloop: uvloop is not installed (pip install uvloop)")
        return "asyncio"
    return "uvloop"


def run_loop(coro, kind: str):
    """Run a coroutine to completion on a fresh event loop of the given kind."""
    if kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


@dataclass
class Endpoint:
    scheme: str
    host: str
    port: int
    base: str  # path prefix ending in /v1

    @classmethod
    def parse(cls, target: str) -> "Endpoint":
        u = urllib.parse.urlsplit(target)
        base = u.path.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        return cls(u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80), base)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.base}{path}"


def probe(options: HttpOptions, timeout: float = 10.0) -> dict:
    """GET /v1/models: the model name, and the context length / vocabulary where the server says
    (vLLM: max_model_len; our local server: both). A clear error when the target does not answer."""
    ep = Endpoint.parse(options.target)
    req = urllib.request.Request(ep.url("/models"), headers=_auth(options))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as e:
        if options.model is None:
            raise RuntimeError(f"target {options.target}: GET {ep.base}/models gave HTTP {e.code}; "
                               "give the model name with --model-name") from None
        return {"model": options.model}
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise RuntimeError(f"target {options.target} does not answer ({reason}); is the server running?") from None
    models = data.get("data") or []
    names = [m.get("id") for m in models if isinstance(m, dict)]
    model = options.model or (names[0] if names else None)
    if model is None:
        raise RuntimeError(f"target {options.target} lists no models; give the model name with --model-name")
    info = next((m for m in models if isinstance(m, dict) and m.get("id") == model), {})
    out = {"model": model, "models": names}
    for key in ("max_model_len", "vocab_size"):
        if isinstance(info.get(key), int):
            out[key] = info[key]
    return out


def _auth(options: HttpOptions) -> dict:
    key = options.api_key
    return {"Authorization": f"Bearer {key}"} if key else {}


# --------------------------------------------------------------------------- one sending process
class _Worker:
    """Releases its share of the requests on one event loop and records what happened."""

    def __init__(self, part: dict, options: HttpOptions, meta: dict, concurrency: int, stop_flag, wid: int = 0):
        self.o = options
        self.rows, self.sched = part["row"], part["scheduled"]
        self.inp, self.out = part["input_tokens"], part["output_tokens"]
        n = len(self.rows)
        self.n = n
        self.wid = wid
        self.ep = Endpoint.parse(options.target)
        self.limit = max(1, int(concurrency))
        self.stop_flag = stop_flag
        self.build = BodyBuilder(api=options.api, model=meta["model"], prompt_kind=options.prompt,
                                 server_type=options.server_type, seed=options.seed,
                                 vocab=options.vocab or meta.get("vocab_size") or DEFAULT_VOCAB,
                                 extra=options.extra_body)
        path = f"{self.ep.base}/{'chat/completions' if options.api == 'chat' else 'completions'}"
        host = self.ep.host if self.ep.port in (80, 443) else f"{self.ep.host}:{self.ep.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in _auth(options).items())
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Accept: text/event-stream\r\nUser-Agent: servegen-fast\r\n{extra}").encode()
        nan = np.full(n, np.nan)
        self.released, self.first, self.completed = nan.copy(), nan.copy(), nan.copy()
        self.generated = np.zeros(n, np.int64)
        self.http_status = np.zeros(n, np.int32)
        self.server_in = np.full(n, -1, np.int64)
        self.attempts = np.zeros(n, np.int32)
        self.status = ["not_released"] * n
        self.error: list = [None] * n
        self.kind: list = [None] * n
        self.itl: list = [None] * n
        self.stats: list = []
        self.idle: collections.deque = collections.deque()
        self.open = 0  # connections open or opening
        self.connecting = 0
        self.waiting: collections.deque = collections.deque()  # (req, data) waiting for a connection
        self.inflight: collections.deque = collections.deque()  # in release order (deadlines in order)
        self.deadline = np.full(n, np.inf)
        self.active = 0
        self.sent = 0  # requests written at least once
        self.done = 0  # requests ended (completed or failed)
        self.stopped = False
        self._pending: dict = {}  # release bytes of the requests in flight (for retries)
        self.ssl = None
        if self.ep.scheme == "https":
            import ssl

            self.ssl = ssl.create_default_context()

    # ---------------------------------------------------------------- connections
    def _open_one(self) -> None:
        self.open += 1
        self.connecting += 1
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Conn(self), self.ep.host, self.ep.port, ssl=self.ssl),
                timeout=min(self.o.timeout, 30.0))
        except asyncio.CancelledError:
            self.connecting -= 1
            raise
        except (OSError, asyncio.TimeoutError) as e:
            self.open -= 1
            self.connecting -= 1
            if self.waiting:  # a request waiting for this connection fails (it is retried where allowed)
                req, _ = self.waiting.popleft()
                self.on_failure(req, "connect_error", f"cannot connect to {self.ep.host}:{self.ep.port}: "
                                f"{e or type(e).__name__}", CLOCK())
            return
        self.connecting -= 1
        self.give_back(conn)

    def give_back(self, conn: _Conn) -> None:
        while self.waiting:
            req, data = self.waiting.popleft()
            if req.conn is None and self.status[req.i] == "in_flight":
                self._write(conn, req, data)
                return
        conn.idle_since = CLOCK()
        self.idle.append(conn)

    def on_conn_lost(self, conn: _Conn) -> None:
        self.open -= 1
        if conn.req is None and conn in self.idle:
            self.idle.remove(conn)

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

    # ---------------------------------------------------------------- requests
    def _data(self, i: int) -> bytes:
        body = self.build(int(self.rows[i]), int(self.inp[i]), int(self.out[i]))
        return self.head + b"x-request-id: %d\r\nContent-Length: %d\r\n\r\n" % (int(self.rows[i]), len(body)) + body

    def _write(self, conn: _Conn, req: _Req, data: bytes) -> None:
        now = CLOCK()
        i = req.i
        if req.attempt == 0 and math.isnan(self.released[i]):
            self.sent += 1
            self.released[i] = now - self.t0
            self.deadline[i] = now + self.o.timeout
        req.attempt += 1
        self.attempts[i] = req.attempt
        conn.send(req, data)

    def _submit(self, req: _Req, data: bytes) -> None:
        self._pending[req.i] = data
        conn = self._take()
        if conn is not None:
            self._write(conn, req, data)
        else:
            self.waiting.append((req, data))
            if self.open < self.limit:
                self._open_one()
        self._top_up()

    def _release(self, i: int, data: bytes) -> None:
        req = _Req(i, self.o.api == "chat")
        self.status[i] = "in_flight"
        self.active += 1
        self.inflight.append(req)
        self._submit(req, data)

    def on_response_end(self, req: _Req, now: float) -> None:
        i = req.i
        if self.status[i] != "in_flight":
            return
        code = req.status_code
        if code != 200:
            kind = f"http_{code}"
            return self.on_failure(req, kind, f"HTTP {code}: {req.error_message()}", now)
        if req.sse is None:
            return self.on_failure(req, "protocol_error", "the response is not an event stream "
                                   f"(content-type is not text/event-stream): {req.error_message()[:200]}", now)
        if req.stream_error:
            return self.on_failure(req, "stream_error", req.stream_error, now)
        self._record(req, now)
        self.status[i] = "completed"
        self._finish(i)

    def _record(self, req: _Req, now: float) -> None:
        i = req.i
        self.http_status[i] = req.status_code
        self.first[i] = req.first - self.t0
        self.completed[i] = (req.last if req.events else now) - self.t0
        self.generated[i] = req.usage_out if isinstance(req.usage_out, int) else req.events
        if isinstance(req.usage_in, int):
            self.server_in[i] = req.usage_in
        self.itl[i] = req.gaps

    def on_failure(self, req: _Req, kind: str, msg: str, now: float, reused: bool = False) -> None:
        i = req.i
        if self.status[i] != "in_flight":
            return
        if req.conn is not None and req.conn.req is req:  # mid-response (a timeout): drop the connection
            req.conn.req = None
            req.conn.close()
        retry_kind = "http_5xx" if kind.startswith("http_5") else kind
        deadline_left = self.deadline[i] - now
        if (reused or (retry_kind in RETRY_KINDS and req.attempt <= self.o.retries)) and not req.events \
                and deadline_left > 0 and not self.stopped and kind != "timeout":
            if reused:  # a kept-alive connection the server had closed: resend, not counted as a retry
                req.attempt -= 1
            data = self._pending.get(i)
            if data is not None:
                req.reset()
                self._submit(req, data)
                return
        self._record(req, now)
        self.http_status[i] = req.status_code
        self.status[i] = "failed"
        self.kind[i] = kind
        self.error[i] = msg
        self.completed[i] = now - self.t0  # a failed request's `completed` is when it failed
        self._finish(i)

    def _finish(self, i: int) -> None:
        self.active -= 1
        self.done += 1
        self._pending.pop(i, None)

    # ---------------------------------------------------------------- loops
    async def _housekeeping(self) -> None:
        next_stats = self.t0
        while True:
            now = CLOCK()
            if self.stop_flag():
                self.stopped = True
            dq = self.inflight
            while dq:
                req = dq[0]
                i = req.i
                if self.status[i] != "in_flight":
                    dq.popleft()
                elif now >= self.deadline[i]:
                    dq.popleft()
                    if req.conn is None:  # still waiting for a connection
                        try:
                            self.waiting.remove((req, self._pending.get(i)))
                        except ValueError:
                            pass
                    self.on_failure(req, "timeout", f"no complete response within {self.o.timeout:g} s "
                                    f"({req.events} token events received)", now)
                else:
                    break
            while self.idle and now - self.idle[0].idle_since > IDLE_CLOSE:
                self.idle.popleft().close()
            if now >= next_stats:
                self.stats.append((now - self.t0, {"in_flight": self.active, "connections": self.open}))
                next_stats = now + STATS_EVERY
            await asyncio.sleep(TICK)

    async def _send_all(self) -> None:
        n = self.n
        t0 = self.t0
        sched = self.sched
        data = self._data(0) if n else b""
        sleep = asyncio.sleep
        burst = 0
        for i in range(n):
            for phase, seconds in release_waits(t0 + sched[i], HTTP):
                if self.stopped:
                    return
                burst = 0
                await sleep(seconds if phase == WORK else 0)  # the loop reads responses meanwhile
            while len(self.waiting) >= self.limit and not self.stopped:
                await sleep(0.001)  # every connection busy and a queue as long: hold the rest (lateness counts)
            if self.stopped:
                return
            self._release(i, data)
            if i + 1 < n:
                data = self._data(i + 1)
            burst += 1
            if burst >= 32:  # far behind: let responses be read now and then
                burst = 0
                await sleep(0)

    def result(self) -> dict:
        return {"released": self.released, "first_token": self.first, "completed": self.completed,
                "generated": self.generated, "http_status": self.http_status, "server_input_tokens": self.server_in,
                "attempts": self.attempts, "status": self.status, "error": self.error, "error_kind": self.kind,
                "itl": self.itl, "stats": self.stats, "end": self.end, "t0": self.t0}

    async def wait_connected(self, timeout: float = 10.0) -> None:
        # warm connections before the clock starts (failures here are reported by the requests)
        deadline = CLOCK() + timeout
        while self.open and len(self.idle) < min(SPARE, self.limit) and CLOCK() < deadline:
            await asyncio.sleep(0.005)


async def _run_worker(w: _Worker, t0_getter) -> None:
    with _quiet_gc():
        await _run_worker_body(w, t0_getter)


@contextlib.contextmanager
def _quiet_gc():
    """Fewer, smaller cyclic-GC passes during a run: what exists before it is frozen out of the
    collector's view and young-generation passes come 30x less often (a full pass over a large
    heap is a multi-millisecond pause, which would show as release lateness)."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


async def _run_worker_body(w: _Worker, t0_getter) -> None:
    w.loop = asyncio.get_running_loop()
    w.t0 = CLOCK()  # placeholder until the start time is known
    for _ in range(min(SPARE, w.limit)):
        w._open_one()
    await w.wait_connected()
    await _run_started(w, await t0_getter())


async def _run_started(w: _Worker, t0: float) -> None:
    w.t0 = t0
    keeper = w.loop.create_task(w._housekeeping())
    try:
        await w._send_all()
        while w.active and not w.stopped:
            await asyncio.sleep(TICK)
    finally:
        keeper.cancel()
        for req in list(w.inflight) + [r for r, _ in w.waiting]:
            if w.status[req.i] == "in_flight":
                w.active -= 1
                if math.isnan(w.released[req.i]):  # still waiting for a connection: never sent
                    w.status[req.i] = "not_released"
                    continue
                w.status[req.i] = "abandoned"
                w.error[req.i] = "in flight when the replay stopped"
                w.kind[req.i] = "abandoned"
                if req.conn is not None:
                    req.conn.req = None
                    req.conn.close()
        for c in list(w.idle):
            c.close()
        w.end = CLOCK() - t0
        await asyncio.sleep(0)  # let the transports close


def _partition(plan, wid: int, workers: int) -> dict:
    sl = slice(wid, None, workers)
    return {"row": plan.row[sl], "scheduled": plan.scheduled[sl], "input_tokens": plan.input_tokens[sl],
            "output_tokens": plan.output_tokens[sl]}


def _worker_process(pipe, wid: int, part: dict, options: HttpOptions, meta: dict, concurrency: int,
                    stop_event) -> None:
    """A sending process: warm up, say ready, wait for the start time, replay its share, send results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and sets stop_event
    try:
        w = _Worker(part, options, meta, concurrency, stop_event.is_set, wid)

        async def get_t0() -> float:
            pipe.send(("ready", None))
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, pipe.recv)

        run_loop(_run_worker(w, get_t0), options.loop)
        pipe.send(("result", w.result()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        pipe.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        pipe.close()


START_DELAY = 0.2  # the start time is set this far ahead of "all workers ready"


def send_plan(plan, options: HttpOptions, meta: dict, *, should_stop=lambda: False, on_start=None,
              progress=None) -> dict:
    """Replay `plan` against the target; returns merged per-request arrays (indexed like the plan)."""
    n = len(plan)
    workers = max(1, min(int(options.workers), n))
    per_worker = max(1, math.ceil(options.concurrency / workers))
    parts = [_partition(plan, w, workers) for w in range(workers)]
    if workers == 1:
        w = _Worker(parts[0], options, meta, per_worker, should_stop, 0)

        async def get_t0() -> float:
            if on_start is not None:
                on_start()
            return CLOCK()

        async def main() -> None:
            prog = None
            if progress is not None:
                span = float(plan.scheduled.max())

                async def report():
                    while True:
                        show_progress(progress, w.sent, w.done, n, CLOCK() - w.t0, span)
                        await asyncio.sleep(0.25)
                prog = asyncio.get_running_loop().create_task(report())
            try:
                await _run_worker(w, get_t0)
            finally:
                if prog is not None:
                    prog.cancel()

        _set_nofile(per_worker)
        run_loop(main(), options.loop)
        results = [w.result()]
    else:
        results = _run_processes(parts, options, meta, per_worker, should_stop, on_start)
    return _merge(plan, results, workers)


def _run_processes(parts, options, meta, per_worker, should_stop, on_start) -> list:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stop_event = ctx.Event()
    _set_nofile(per_worker)
    procs, pipes = [], []
    for wid, part in enumerate(parts):
        a, b = ctx.Pipe()
        p = ctx.Process(target=_worker_process, args=(b, wid, part, options, meta, per_worker, stop_event),
                        daemon=True, name=f"servegen-http-{wid}")
        p.start()
        b.close()
        procs.append(p)
        pipes.append(a)
    try:
        for wid, a in enumerate(pipes):
            kind, payload = a.recv()
            if kind == "error":
                raise RuntimeError(f"HTTP worker {wid} failed to start: {payload}")
        if on_start is not None:
            on_start()
        t0 = CLOCK() + START_DELAY
        for a in pipes:
            a.send(t0)
        results: list = [None] * len(parts)
        left = set(range(len(parts)))
        from multiprocessing.connection import wait

        while left:
            if should_stop():
                stop_event.set()
            ready = wait([pipes[i] for i in left], timeout=0.1)
            for a in ready:
                wid = pipes.index(a)
                try:
                    kind, payload = a.recv()
                except EOFError:
                    raise RuntimeError(f"HTTP worker {wid} ended without results (exit code "
                                       f"{procs[wid].exitcode})") from None
                if kind == "error":
                    raise RuntimeError(f"HTTP worker {wid} failed: {payload}")
                results[wid] = payload
                left.discard(wid)
        return results
    finally:
        stop_event.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def _set_nofile(need: int) -> None:
    """Raise the open-file limit towards the hard limit when the connection limit needs it."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = need + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY
                                                        else want, hard))
    except (ImportError, ValueError, OSError):
        pass


def _merge(plan, results: list, workers: int) -> dict:
    n = len(plan)
    out = {"released": np.full(n, np.nan), "first_token": np.full(n, np.nan), "completed": np.full(n, np.nan),
           "generated": np.zeros(n, np.int64), "http_status": np.zeros(n, np.int32),
           "server_input_tokens": np.full(n, -1, np.int64), "attempts": np.zeros(n, np.int32)}
    lists = {"status": [None] * n, "error": [None] * n, "error_kind": [None] * n, "itl": [None] * n}
    stats: dict = {}
    for wid, r in enumerate(results):
        idx = np.arange(wid, n, workers)
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
