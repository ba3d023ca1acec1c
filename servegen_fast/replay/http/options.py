"""The target of HTTP replay and how to talk to it: options, endpoint, event loop, and the
probe (`GET /v1/models`) made before the clock starts."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from .bodies import resolve_prompt_kind


@dataclass
class HttpOptions:
    """How to talk to the target (`bodies.py` says what a request carries)."""

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
    (vLLM: max_model_len; our local server and the test server also their prefix cache's block
    size and KV capacity: cache_block_size, kv_cache_tokens). A clear error when the target does
    not answer."""
    ep = Endpoint.parse(options.target)
    req = urllib.request.Request(ep.url("/models"), headers=auth_headers(options))
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
    for key in ("max_model_len", "vocab_size", "cache_block_size", "kv_cache_tokens"):
        if isinstance(info.get(key), int):
            out[key] = info[key]
    return out


def auth_headers(options: HttpOptions) -> dict:
    key = options.api_key
    return {"Authorization": f"Bearer {key}"} if key else {}
