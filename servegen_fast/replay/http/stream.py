"""One request and one connection of the HTTP sender.

`_Conn` is a minimal HTTP/1.1 client connection written as an `asyncio.Protocol`: it parses
the response head and a Content-Length, chunked or read-until-close body incrementally from
whatever bytes arrive. `_Req` holds one request in flight and parses its server-sent events,
stamping every streamed token with `CLOCK` (time.perf_counter, the replayer's clock) when its
bytes arrive; events are classified on their bytes and only parsed as JSON when they carry
usage or an error. A connection reports to its pool and to the sender's `Outcomes`.
"""
from __future__ import annotations

import array
import asyncio
import json
import math
import re

from ..timing import CLOCK
MAX_HEAD = 65536
MAX_ERROR_BODY = 4096
# event classification on bytes (see _Req._event)
_NEEDS_JSON = re.compile(rb'"usage"\s*:\s*\{|"error"\s*:')
_CONTENT = re.compile(rb'"content"\s*:\s*(null|""|")')
_TEXT = re.compile(rb'"text"\s*:\s*("|null)')
_REASONING = re.compile(rb'"reasoning(?:_content)?"\s*:\s*"[^"]')
_ROLE = b'"role"'


# --------------------------------------------------------------------------- one request in flight
class _Req:
    __slots__ = ("i", "conn", "status_code", "sse", "body", "events", "first", "last", "gaps", "done_marker",
                 "usage_out", "usage_in", "usage_cached", "stream_error", "got_bytes", "attempt", "chat")

    def __init__(self, i: int, chat: bool):
        self.i, self.chat = i, chat
        self.attempt = 0
        self.reset()

    def reset(self) -> None:
        self.conn = None
        self.status_code = 0
        self.sse = None  # bytearray for an event stream, None otherwise
        self.body = bytearray()
        self.events = 0
        self.first = math.nan
        self.last = math.nan
        self.gaps = array.array("f")  # 4 bytes a gap: long streams over many requests stay small
        self.done_marker = False
        self.usage_out = None
        self.usage_in = None
        self.usage_cached = None  # usage.prompt_tokens_details.cached_tokens (vLLM; SGLang: usage.cached_tokens)
        self.stream_error = None
        self.got_bytes = False

    def on_head(self, code: int, ctype: bytes) -> None:
        self.status_code = code
        self.got_bytes = True
        if code == 200 and b"text/event-stream" in ctype:
            self.sse = bytearray()

    def feed(self, data: bytes, now: float) -> None:
        if self.sse is None:
            if len(self.body) < MAX_ERROR_BODY:
                self.body += data[:MAX_ERROR_BODY - len(self.body)]
            return
        buf = self.sse
        buf += data
        if b"\r" in data:
            buf[:] = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            return
        block = bytes(buf[:end])
        del buf[:end + 2]
        for event in block.split(b"\n\n"):
            if event[:6] == b"data: " and b"\n" not in event:  # the usual one-line event
                self._event(event[6:], now)
                continue
            payload = None
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    d = line[5:]
                    if d[:1] == b" ":
                        d = d[1:]
                    payload = d if payload is None else payload + b"\n" + d
            if payload is not None:
                self._event(payload, now)

    def _event(self, payload: bytes, now: float) -> None:
        """One event's data. Token chunks are classified on their bytes (keys cannot occur inside
        JSON strings unescaped); usage, errors and anything unusual go through json.loads."""
        if payload == b"[DONE]":
            self.done_marker = True
            return
        if b'"choices"' in payload and _NEEDS_JSON.search(payload) is None:
            if self.chat:
                m = _CONTENT.search(payload)
                content = m.group(1) if m else None  # b'"' text, b'""' empty, b'null' or None: no content
                token = content == b'"' or _REASONING.search(payload) is not None or \
                    (content == b'""' and _ROLE not in payload)
            else:
                m = _TEXT.search(payload)
                token = m is not None and m.group(1) == b'"'
            if token:
                self._token(now)
            return
        self._event_json(payload, now)

    def _token(self, now: float) -> None:
        self.events += 1
        if self.events == 1:
            self.first = now
        else:
            self.gaps.append(now - self.last)
        self.last = now

    def _event_json(self, payload: bytes, now: float) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            self.stream_error = self.stream_error or f"malformed event data: {payload[:120]!r}"
            return
        if not isinstance(obj, dict):
            return
        err = obj.get("error")
        if err:
            msg = err.get("message", err) if isinstance(err, dict) else err
            self.stream_error = self.stream_error or f"error event: {str(msg)[:300]}"
            return
        choices = obj.get("choices")
        if choices:
            c = choices[0]
            if self.chat:
                d = c.get("delta") or {}
                content = d.get("content")
                token = bool(content or d.get("reasoning_content") or d.get("reasoning")) or \
                    ("role" not in d and content is not None)
            else:
                token = c.get("text") is not None
            if token:
                self._token(now)
        usage = obj.get("usage")
        if usage:
            self.usage_out = usage.get("completion_tokens", self.usage_out)
            self.usage_in = usage.get("prompt_tokens", self.usage_in)
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else usage.get("cached_tokens")
            if isinstance(cached, int):
                self.usage_cached = cached

    def error_message(self) -> str:
        text = bytes(self.body).decode("utf-8", "replace").strip()
        try:
            obj = json.loads(text)
            if isinstance(obj, dict):
                err = obj.get("error", obj)
                if isinstance(err, dict):
                    text = str(err.get("message") or err.get("detail") or err)
                else:
                    text = str(obj.get("message") or obj.get("detail") or err)
        except ValueError:
            pass
        return text[:300]


# --------------------------------------------------------------------------- one connection
HEAD, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, LENGTH, UNTIL_CLOSE, IDLE = range(8)


def parse_head(head: bytes) -> tuple[int, bool, int | None, bool, bytes] | str:
    """A response head -> (status code, keep-alive, Content-Length or None, chunked, content type),
    or what is wrong with it. The headers of an informational (1xx) response are not read."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    try:
        version, code = parts[0], int(parts[1])
    except (IndexError, ValueError):
        return f"bad status line {lines[0][:60]!r}"
    if 100 <= code < 200:
        return code, True, None, False, b""
    length = None
    chunked = False
    conn_hdr = b""
    ctype = b""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return "bad content-length"
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            conn_hdr = value.lower()
        elif name == b"content-type":
            ctype = value.lower()
    keep_alive = (b"close" not in conn_hdr) and (version == b"HTTP/1.1" or b"keep-alive" in conn_hdr)
    return code, keep_alive, length, chunked, ctype


class _Framing:
    """Incremental framing of one HTTP/1.1 response at a time, from whatever bytes arrive: the
    head, then a Content-Length, chunked or read-until-close body, whose bytes go to the request."""

    __slots__ = ("buf", "state", "remaining", "keep_alive")

    def __init__(self):
        self.buf = bytearray()  # an incomplete head or chunk header, kept for the next read
        self.state = IDLE
        self.remaining = 0
        self.keep_alive = True

    def feed(self, data: bytes, req: _Req, now: float) -> bool | str | None:
        """The bytes of one read: True when they complete the response, None when more are
        needed, else what is wrong (a protocol error)."""
        if self.buf:
            data = bytes(self.buf) + data
            self.buf.clear()
        pos, n = 0, len(data)
        body: list = []  # decoded body bytes of this read, fed to the request at once
        while True:
            st = self.state
            if st == CHUNK_SIZE:
                k = data.find(b"\r\n", pos)
                if k < 0:
                    break
                try:
                    size = int(data[pos:k].split(b";", 1)[0], 16)
                except ValueError:
                    return f"bad chunk size {data[pos:k][:40]!r}"
                pos = k + 2
                if size:
                    self.remaining, self.state = size, CHUNK_DATA
                else:
                    self.state = TRAILER
            elif st == CHUNK_DATA:
                if pos >= n:
                    break
                pos = self._take(data, pos, n, body)
                if not self.remaining:
                    self.state = CHUNK_CRLF
            elif st == CHUNK_CRLF:
                if n - pos < 2:
                    break
                if data[pos:pos + 2] != b"\r\n":
                    return "bad chunk terminator"
                pos += 2
                self.state = CHUNK_SIZE
            elif st == TRAILER:
                k = data.find(b"\r\n", pos)
                if k < 0:
                    break
                last = k == pos
                pos = k + 2
                if last:  # end of trailers: the response is complete
                    return self._end(req, body, now, pos < n)
            elif st == LENGTH:
                if pos >= n:
                    break
                pos = self._take(data, pos, n, body)
                if not self.remaining:
                    return self._end(req, body, now, pos < n)
            elif st == UNTIL_CLOSE:
                body.append(data[pos:])
                pos = n
                break
            elif st == HEAD:
                k = data.find(b"\r\n\r\n", pos)
                if k < 0:
                    break
                error = self._head(data[pos:k], req)
                pos = k + 4
                if error:
                    return error
                if self.state == LENGTH and self.remaining == 0:
                    return self._end(req, body, now, pos < n)
            else:  # IDLE with a request: cannot happen
                return "unexpected state"
        if pos < n:
            if n - pos > MAX_HEAD:
                return "response head or chunk header too long"
            self.buf += data[pos:]
        if body:
            req.feed(body[0] if len(body) == 1 else b"".join(body), now)
        return None

    def _head(self, head: bytes, req: _Req) -> str | None:
        h = parse_head(head)
        if isinstance(h, str):
            return h
        code, keep_alive, length, chunked, ctype = h
        if 100 <= code < 200:  # informational: the real head follows
            return None
        self.keep_alive = keep_alive
        req.on_head(code, ctype)
        if chunked:
            self.state = CHUNK_SIZE
        elif length is not None:
            self.state, self.remaining = LENGTH, length
        else:
            self.state, self.keep_alive = UNTIL_CLOSE, False
        return None

    def _take(self, data: bytes, pos: int, n: int, body: list) -> int:
        """Move up to `remaining` body bytes from data[pos:n] into `body`; the new position."""
        end = min(n, pos + self.remaining)
        body.append(data[pos:end])
        self.remaining -= end - pos
        return end

    def _end(self, req: _Req, body: list, now: float, leftover: bool) -> bool:
        if body:
            req.feed(body[0] if len(body) == 1 else b"".join(body), now)
        if leftover:  # bytes after the response on a connection we did not pipeline on
            self.keep_alive = False
        return True


class _Conn(asyncio.Protocol):
    """One keep-alive connection of a `Pool` (`pool.py`), which it tells when it is free again or
    lost; `owner` (the sender's `Outcomes`) hears how each request ended."""

    def __init__(self, pool, owner):
        self.pool, self.owner = pool, owner
        self.transport = None
        self.req: _Req | None = None
        self.framing = _Framing()
        self.closed = False
        self.served = 0
        self.idle_since = 0.0

    # asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = CLOCK()
        req = self.req
        if req is None:  # bytes nobody asked for: drop the connection
            self.close()
            return
        got = self.framing.feed(data, req, now)
        if got is True:
            self._response_end(now)
        elif got is not None:
            self._protocol_error(got)

    def connection_lost(self, exc) -> None:
        self.closed = True
        req, self.req = self.req, None
        self.pool.lost(self)
        if req is None:
            return
        now = CLOCK()
        if self.framing.state == UNTIL_CLOSE:
            self.framing.state = IDLE
            self.owner.on_response_end(req, now)
            return
        why = f": {exc}" if exc else ""
        if not req.got_bytes:
            msg = f"connection closed before a response{why}"
        else:
            msg = f"connection closed mid-response after {req.events} token events{why}"
        self.owner.on_failure(req, "connection_closed", msg, now, reused=self.served > 0 and not req.got_bytes)

    def send(self, req: _Req, data: bytes) -> None:
        self.req = req
        req.conn = self
        self.framing.state = HEAD
        self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def _response_end(self, now: float) -> None:
        req, self.req = self.req, None
        f = self.framing
        f.state = IDLE
        leftover = bool(f.buf)
        f.buf.clear()
        if req is None:
            return
        self.served += 1
        self.owner.on_response_end(req, now)
        if f.keep_alive and not leftover and not self.closed:
            self.pool.give_back(self)
        else:
            self.close()

    def _protocol_error(self, msg: str) -> None:
        req, self.req = self.req, None
        self.close()
        if req is not None:
            self.owner.on_failure(req, "protocol_error", msg, CLOCK())
