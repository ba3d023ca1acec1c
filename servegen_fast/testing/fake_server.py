"""A minimal OpenAI-style streaming server that answers at once, with injectable faults.

For the HTTP sender's tests and benchmark (not a model server: see `servegen_fast.replay.http.server`).
Raw asyncio protocol, HTTP/1.1 keep-alive, chunked event streams; each request gets
``min(max_tokens, max_events)`` token events written in one go, then a usage chunk and
``[DONE]``. The behaviour per request is its mode:

- ``ok``: the stream above;
- ``error500``: HTTP 500 with an OpenAI-style JSON error body;
- ``close``: the response head and one token event, then the connection is closed;
- ``close_before``: the connection is closed on receipt, before any response byte;
- ``stall``: the head and one token event, then nothing (the connection stays open);
- ``slow``: the tokens one by one, `delay` seconds apart (the first after `delay` too);
- ``oneshot``: the ``ok`` stream, then the connection is closed without a ``Connection: close``
  header (a server dropping kept-alive connections: the client must not lose requests to it);
- ``mixed``: by request id (the ``x-request-id`` header) mod 5: ok, error500, close, stall, ok.

With a prefix cache (``cache_tokens``, ``--cache-tokens N``: the KV capacity in tokens; 0 is
off, the default) the server keeps an LRU of its prompts' full blocks (`replay/cache.py`, block
size ``cache_block_size``) and reports ``usage.prompt_tokens`` and
``usage.prompt_tokens_details.cached_tokens`` as vLLM does; ``/v1/models`` then lists
``cache_block_size`` and ``kv_cache_tokens``. Prompts: token ids, or text split on whitespace
(one token a word).

    python -m servegen_fast.testing.fake_server --port 0 --mode ok     # prints "listening on URL"
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import threading

from ..replay.cache import DEFAULT_BLOCK_SIZE, PrefixCache, content_keys

MODES = ("ok", "error500", "close", "close_before", "stall", "slow", "oneshot", "mixed")
MIXED = ("ok", "error500", "close", "stall", "ok")
_MAX_TOKENS = re.compile(rb'"max_tokens"\s*:\s*(\d+)')


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj) -> bytes:
    return _chunk(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode())
                  + b"\n\n")


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
DONE = _event(b"[DONE]") + b"0\r\n\r\n"


def _token(chat: bool) -> bytes:
    choice = ({"index": 0, "delta": {"content": " tok"}, "finish_reason": None} if chat else
              {"index": 0, "text": " tok", "finish_reason": None})
    return _event({"id": "x", "object": "chat.completion.chunk" if chat else "text_completion", "model": "fake",
                   "choices": [choice]})


TOKEN = {False: _token(False), True: _token(True)}


def _usage(n: int, prompt: int | None = None, cached: int | None = None) -> bytes:
    usage = {"completion_tokens": n}
    if prompt is not None:
        usage.update(prompt_tokens=prompt, prompt_tokens_details={"cached_tokens": cached})
    return _event({"id": "x", "object": "text_completion", "model": "fake", "choices": [], "usage": usage})


def _prompt_items(body: bytes) -> list:
    """The prompt's tokens: ids as given, or the words of a text prompt / the chat messages."""
    obj = json.loads(body)
    p = obj.get("prompt")
    if p is None:
        p = " ".join(str(m.get("content", "")) for m in obj.get("messages") or [] if isinstance(m, dict))
    return p.split() if isinstance(p, str) else list(p)


class _Handler(asyncio.Protocol):
    def __init__(self, server: "FakeServer"):
        self.s = server
        self.buf = bytearray()
        self.t = None

    def connection_made(self, transport) -> None:
        self.t = transport
        self.s.connections += 1
        self.s.peak_connections = max(self.s.peak_connections, self.s.connections)
        self.s.handlers.add(self)

    def connection_lost(self, exc) -> None:
        self.s.connections -= 1
        self.s.handlers.discard(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            k = buf.find(b"\r\n\r\n")
            if k < 0:
                return
            head = bytes(buf[:k])
            low = head.lower()
            m = re.search(rb"content-length:\s*(\d+)", low)
            length = int(m.group(1)) if m else 0
            if len(buf) < k + 4 + length:
                return
            body = bytes(buf[k + 4:k + 4 + length])
            del buf[:k + 4 + length]
            self.s.requests += 1
            if not self._respond(head, low, body):
                return

    def _respond(self, head: bytes, low: bytes, body: bytes) -> bool:
        path = head.split(b" ", 2)[1] if b" " in head else b"/"
        if path.endswith(b"/models"):
            model = {"id": "fake", "object": "model", "max_model_len": 1 << 20}
            if self.s.cache is not None:
                model.update(cache_block_size=self.s.cache.block_size, kv_cache_tokens=self.s.cache_tokens)
            data = json.dumps({"object": "list", "data": [model]}).encode()
            self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(data), data))
            return True
        mode = self.s.mode
        if mode == "mixed":
            m = re.search(rb"x-request-id:\s*(\d+)", low)
            mode = MIXED[int(m.group(1)) % len(MIXED)] if m else "ok"
        chat = b"/chat/" in path
        m = _MAX_TOKENS.search(body)
        n = max(1, min(int(m.group(1)) if m else 1, self.s.max_events))
        if mode == "ok" or mode == "oneshot":
            usage = _usage(n)
            if self.s.cache is not None:
                items = _prompt_items(body)
                cached = self.s.cache.admit(content_keys(items, self.s.cache.block_size), len(items))
                self.s.cached.append(cached)
                m = re.search(rb"x-request-id:\s*(\d+)", low)
                if m:
                    self.s.prompts[int(m.group(1))] = items
                usage = _usage(n, len(items), cached)
            self.t.write(SSE_HEAD + TOKEN[chat] * n + usage + DONE)
            if mode == "oneshot":
                self.t.close()
                return False
        elif mode == "error500":
            err = b'{"error":{"message":"injected failure","type":"InternalServerError","code":500}}'
            self.t.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(err), err))
        elif mode == "close":
            self.t.write(SSE_HEAD + TOKEN[chat])
            self.t.close()
            return False
        elif mode == "close_before":
            self.t.close()
            return False
        elif mode == "stall":
            self.t.write(SSE_HEAD + TOKEN[chat])
            self.t.pause_reading()  # nothing more on this connection
            return False
        elif mode == "slow":
            self.t.pause_reading()
            asyncio.get_running_loop().create_task(self._slow(chat, n))
            return False
        return True

    async def _slow(self, chat: bool, n: int) -> None:
        self.t.write(SSE_HEAD)
        for _ in range(n):
            await asyncio.sleep(self.s.delay)
            if self.t.is_closing():
                return
            self.t.write(TOKEN[chat])
        self.t.write(_usage(n) + DONE)
        self.t.resume_reading()


class FakeServer:
    """Run on loopback in a background thread: ``with FakeServer("mixed") as url: ...``."""

    def __init__(self, mode: str = "ok", *, port: int = 0, max_events: int = 16, delay: float = 0.05,
                 host: str = "127.0.0.1", cache_tokens: int = 0, cache_block_size: int = DEFAULT_BLOCK_SIZE):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        self.cache_tokens = int(cache_tokens)
        self.cache = PrefixCache(cache_block_size, self.cache_tokens // cache_block_size) if cache_tokens else None
        self.cached: list = []  # cached tokens reported, in order of arrival
        self.prompts: dict = {}  # request id -> the prompt's items (with the cache on)
        self.mode, self.port, self.max_events, self.delay, self.host = mode, port, max_events, delay, host
        self.requests = 0
        self.connections = 0
        self.peak_connections = 0
        self.handlers: set = set()
        self._thread = None
        self._loop = None
        self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Handler(self), self.host, self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    def __enter__(self) -> str:
        ready = threading.Event()

        def main():
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()
            self._server.close()
            for h in list(self.handlers):
                h.t.abort()
            for t in asyncio.all_tasks(self._loop):
                t.cancel()
            self._loop.run_until_complete(asyncio.sleep(0.01))
            self._loop.close()

        self._thread = threading.Thread(target=main, daemon=True, name="fake-openai-server")
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("fake server did not start")
        return self.url

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="instant OpenAI-style streaming server with fault modes (for tests "
                                            "and benchmarks)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--max-events", type=int, default=16)
    p.add_argument("--delay", type=float, default=0.05)
    p.add_argument("--uvloop", action="store_true", help="run on uvloop where installed")
    p.add_argument("--cache-tokens", type=int, default=0, help="prefix cache capacity in tokens (0: off)")
    p.add_argument("--cache-block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    a = p.parse_args(argv)
    s = FakeServer(a.mode, port=a.port, max_events=a.max_events, delay=a.delay, host=a.host,
                   cache_tokens=a.cache_tokens, cache_block_size=a.cache_block_size)

    async def serve():
        await s.start()
        print(f"listening on {s.url}", flush=True)
        await asyncio.Event().wait()

    try:
        if a.uvloop:
            import uvloop

            uvloop.run(serve())
        else:
            asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
