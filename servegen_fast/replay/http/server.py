"""A minimal OpenAI-compatible streaming server over the on-device engine adapter (`servegen-fast serve`).

For testing HTTP replay against a real model on loopback, not for production: aiohttp in
front of transformers' continuous batching (`TransformersEngine`, a random tiny/1b/8b
Llama-style model or a local checkpoint). Requests stream their tokens as the engine makes
them: each request is added with ``streaming=True`` and a result handler on the event loop
(`ContinuousBatchingManager.register_result_handler`), and every new token is written as one
server-sent event.

Endpoints: ``GET /v1/models`` (with ``max_model_len`` and ``vocab_size``), ``GET /health``,
``POST /v1/completions`` (``prompt``: a string or a list of token ids),
``POST /v1/chat/completions`` (``messages``: the contents are joined, no chat template),
``GET /debug/requests`` (server-side timings per request id, on `time.perf_counter`).
Streaming and non-streaming; ``stream_options.include_usage`` adds the usage chunk.
Exactly ``max_tokens`` tokens are generated (no EOS), so ``min_tokens`` and ``ignore_eos``
are accepted and have nothing left to do.

Prefix cache: the server keeps one of its own (`replay/cache.py`: an LRU of the prompts' full
blocks of DEFAULT_BLOCK_SIZE tokens, as many as the engine's KV cache holds) and reports
``usage.prompt_tokens_details.cached_tokens`` as vLLM does; transformers' engine itself
recomputes every prompt, so the count says what a prefix-caching engine of this KV capacity
would have reused. ``/v1/models`` lists ``cache_block_size`` and ``kv_cache_tokens``.

Tokenizer: the random models have none, so text is split on whitespace, one token per word
(id from a CRC of the word), and a generated token id is shown as one word. Token-id prompts
are taken as they are (ids must lie in [0, vocab)).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
import zlib

from ..cache import DEFAULT_BLOCK_SIZE, PrefixCache, content_keys
from ..prompts import RESERVED_IDS, WORDS
from ..timing import CLOCK

DEFAULT_MAX_TOKENS = 16


def word_ids(text: str, vocab: int) -> list[int]:
    """One token per whitespace-separated word: ids in [RESERVED_IDS, vocab) from a CRC of the word."""
    span = max(vocab - RESERVED_IDS, 1)
    return [RESERVED_IDS + zlib.crc32(w.encode()) % span for w in text.split()]


def token_text(token: int) -> str:
    return " " + WORDS[int(token) % len(WORDS)]


def _error(status: int, message: str, kind: str = "BadRequestError"):
    from aiohttp import web

    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


def _prompt(body: dict, chat: bool, vocab: int) -> list[int]:
    """Token ids of a completions prompt (text or ids) or of the joined chat message contents."""
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("'messages' must be a non-empty list")
        parts = []
        for m in msgs:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, list):  # content parts: text only
                for p in c:
                    if not isinstance(p, dict) or p.get("type") != "text":
                        raise ValueError("only text content parts are supported")
                    parts.append(str(p.get("text", "")))
            elif isinstance(c, str):
                parts.append(c)
        return word_ids(" ".join(parts), vocab)
    p = body.get("prompt")
    if isinstance(p, str):
        return word_ids(p, vocab)
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        if min(p) < 0 or max(p) >= vocab:
            raise ValueError(f"token ids must lie in [0, {vocab})")
        return p
    raise ValueError("'prompt' must be a string or a non-empty list of token ids (batches are not supported)")


class Refused(Exception):
    """A request answered with an error: args (HTTP status, message, OpenAI error type)."""


def parse_request(body: dict, chat: bool, name: str, vocab: int, max_len: int) -> tuple[list[int], int]:
    """(prompt token ids, max_tokens) of a completions or chat request body, or Refused."""
    if body.get("model") not in (None, name):
        raise Refused(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
    try:
        ids = _prompt(body, chat, vocab)
    except ValueError as e:
        raise Refused(400, str(e), "BadRequestError") from None
    if not ids:
        raise Refused(400, "the prompt is empty", "BadRequestError")
    n = body.get("max_completion_tokens") if chat and body.get("max_tokens") is None else body.get("max_tokens")
    n = DEFAULT_MAX_TOKENS if n is None else n
    if not isinstance(n, int) or n < 1:
        raise Refused(400, "max_tokens must be a positive integer", "BadRequestError")
    if len(ids) + n > max_len:
        raise Refused(400, f"This model's maximum context length is {max_len} tokens. However, you requested "
                           f"{len(ids) + n} tokens ({len(ids)} in the messages, {n} in the completion).",
                      "BadRequestError")
    return ids, n


def _web():
    from aiohttp import web  # the serve extra; imported when a server runs

    return web


def _sse(model: str, key: str, obj: str, created: int, choice: dict, usage_wanted: bool) -> bytes:
    chunk = {"id": key, "object": obj, "created": created, "model": model, "choices": [choice]}
    if usage_wanted:
        chunk["usage"] = None
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class ModelServer:
    """The engine behind an aiohttp application. `start()` loads and warms the model."""

    def __init__(self, model: str = "tiny", *, device: str = "cpu", seed: int = 0, served_name: str | None = None,
                 log_requests: int = 100_000, **engine_options):
        from ..local.transformers import TransformersEngine, quiet_transformers

        quiet_transformers()
        self.engine = TransformersEngine(model, device=device, seed=seed, **engine_options)
        self.name = served_name or model
        self.vocab = self.engine.vocab_size
        self.max_len = self.engine.max_model_len
        self.timings: dict[str, dict] = {}  # request id -> server-side times (perf_counter) and counts
        self.log_requests = log_requests
        self._ids = itertools.count()
        self.cache: PrefixCache | None = None
        self.kv_tokens = None

    def start(self) -> None:
        self.engine.start()
        tokens = self.engine.info.details.get("kv_cache_tokens")
        self.cache = PrefixCache(DEFAULT_BLOCK_SIZE, None if tokens is None else int(tokens) // DEFAULT_BLOCK_SIZE)
        self.kv_tokens = tokens

    def stop(self) -> None:
        self.engine.stop(abandon=True)

    def app(self):
        from aiohttp import web

        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/debug/requests", self.debug_requests)
        return app

    # ---------------------------------------------------------------- handlers
    async def health(self, request):
        return _web().Response(text="ok")

    async def models(self, request):
        return _web().json_response({"object": "list", "data": [
            {"id": self.name, "object": "model", "owned_by": "servegen-fast", "max_model_len": self.max_len,
             "vocab_size": self.vocab, "cache_block_size": DEFAULT_BLOCK_SIZE, "kv_cache_tokens": self.kv_tokens}]})

    async def debug_requests(self, request):
        return _web().json_response(self.timings)

    async def completions(self, request):
        return await self._generate(request, chat=False)

    async def chat(self, request):
        return await self._generate(request, chat=True)

    async def _generate(self, request, chat: bool):
        from aiohttp import web

        arrival = CLOCK()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            return _error(400, f"invalid JSON body: {e}")
        try:
            ids, n = parse_request(body, chat, self.name, self.vocab, self.max_len)
        except Refused as e:
            return _error(*e.args)
        cached = self.cache.admit(content_keys(ids, DEFAULT_BLOCK_SIZE), len(ids)) if self.cache is not None else 0
        rid = request.headers.get("x-request-id") or f"req-{next(self._ids)}"
        key = f"{rid}#{next(self._ids)}"
        mgr = self.engine.manager
        q: asyncio.Queue = asyncio.Queue()
        mgr.register_result_handler(key, q.put_nowait)
        if mgr.add_request(ids, request_id=key, max_new_tokens=n, streaming=True, record_timestamps=True,
                           eos_token_id=-1) is None:
            return _error(503, "the engine is not accepting requests", "ServiceUnavailableError")
        rec = {"arrival": arrival, "prompt_tokens": len(ids), "max_tokens": n, "cached_tokens": cached}
        if len(self.timings) < self.log_requests:
            self.timings[rid] = rec
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        stream = bool(body.get("stream"))
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = None
        sent = 0
        texts: list[str] = []
        try:
            if stream:
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
                await resp.prepare(request)
                if chat:
                    opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    await resp.write(_sse(self.name, key, obj, created, opening, usage_wanted))
            while True:
                out = await q.get()
                if out.error is not None:
                    raise RuntimeError(str(out.error))
                new = out.generated_tokens[sent:]
                finished = out.is_finished()
                if new and "first_token" not in rec and out.timestamps:
                    rec["first_token"] = float(out.timestamps[0])
                for j, tok in enumerate(new):
                    text = token_text(tok)
                    texts.append(text)
                    if stream:
                        last = finished and j == len(new) - 1
                        choice = ({"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text})
                        choice["finish_reason"] = "length" if last else None
                        data = _sse(self.name, key, obj, created, choice, usage_wanted)
                        if "first_sent" not in rec:
                            rec["first_sent"] = CLOCK()  # stamped before the write: the client reads after it
                        if last:
                            rec["sent_all"] = CLOCK()
                        await resp.write(data)
                sent = len(out.generated_tokens)
                if finished:
                    if out.timestamps:
                        rec["completed"] = float(out.timestamps[-1])
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            mgr.cancel_request(key)
            rec["error"] = "client went away"
            raise
        except RuntimeError as e:
            rec["error"] = str(e)
            if resp is None:
                return _error(500, f"generation failed: {e}", "InternalServerError")
            await resp.write(b"data: " + json.dumps({"error": {"message": f"generation failed: {e}",
                                                               "code": 500}}).encode() + b"\n\n")
            await resp.write_eof()
            return resp
        rec["completion_tokens"] = sent
        rec.setdefault("sent_all", CLOCK())
        usage = {"prompt_tokens": len(ids), "completion_tokens": sent, "total_tokens": len(ids) + sent,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        if not stream:
            choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(texts)}} if chat
                      else {"index": 0, "text": "".join(texts)})
            choice["finish_reason"] = "length"
            return web.json_response({"id": key, "object": "chat.completion" if chat else "text_completion",
                                      "created": created, "model": self.name, "choices": [choice], "usage": usage})
        if usage_wanted:
            await resp.write(b"data: " + json.dumps({"id": key, "object": obj, "created": created, "model": self.name,
                                                     "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


async def _serve(server: ModelServer, host: str, port: int, announce) -> None:
    from aiohttp import web

    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    announce(f"listening on http://{host}:{bound}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(model: str = "tiny", *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", seed: int = 0,
          served_name: str | None = None, announce=None, **engine_options) -> None:
    """Load and warm the model, then serve until SIGINT/SIGTERM."""
    announce = announce or (lambda msg: print(msg, file=sys.stderr, flush=True))
    server = ModelServer(model, device=device, seed=seed, served_name=served_name, **engine_options)
    server.start()
    try:
        asyncio.run(_serve(server, host, port, announce))
    finally:
        server.stop()
