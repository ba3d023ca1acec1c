"""Request bodies of HTTP replay: the prompt (`..prompts`, as JSON bytes) and options that force
the output length, for each API and server type.

Output lengths: ``max_tokens = n`` always; vLLM and SGLang also get ``min_tokens = n`` and
``ignore_eos: true`` so that exactly n tokens are generated.
"""
from __future__ import annotations

import json

from ..prompts import pool, prepare, text_json, token_json

SERVER_TYPES = ("vllm", "sglang", "tgi", "openai")
APIS = ("completions", "chat")
PROMPT_KINDS = ("auto", "tokens", "text")
DEFAULT_VOCAB = 32000  # upper bound for token ids when the server does not say (every common vocab is larger)


def resolve_prompt_kind(kind: str, api: str, server_type: str) -> str:
    """'auto' -> token ids for /v1/completions on vLLM or SGLang, text otherwise."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of {PROMPT_KINDS}")
    if api not in APIS:
        raise ValueError(f"unknown API {api!r}; expected one of {APIS}")
    if server_type not in SERVER_TYPES:
        raise ValueError(f"unknown server type {server_type!r}; expected one of {SERVER_TYPES}")
    if kind == "auto":
        return "tokens" if api == "completions" and server_type in ("vllm", "sglang") else "text"
    if kind == "tokens" and api == "chat":
        raise ValueError("token-id prompts need the completions API (--api completions); chat takes text")
    return kind


class BodyBuilder:
    """Builds the JSON body of one request as bytes (the part that does not change is encoded once)."""

    def __init__(self, *, api: str, model: str, prompt_kind: str, server_type: str, seed: int = 0,
                 vocab: int = DEFAULT_VOCAB, extra: dict | None = None):
        self.api, self.kind, self.seed, self.vocab = api, prompt_kind, seed, int(vocab)
        self.force = server_type in ("vllm", "sglang")
        fixed = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
        if server_type == "tgi":  # TGI's Messages API has no stream_options on every version
            fixed.pop("stream_options")
        if api == "completions":
            fixed["temperature"] = 0.0
        fixed.update(extra or {})
        self._fixed = json.dumps(fixed, separators=(",", ":"))[1:-1].encode()
        prepare(seed, prompt_kind, self.vocab)  # built now, before any release

    def block_ranges(self, cids, block_size: int) -> tuple:
        """Byte ranges of blocks with these content ids in this builder's prompt sequence, computed
        at once (io.content `Pool.block_ranges`), for `prompts.Prompt.ranges`."""
        return pool(self.seed, self.kind, self.vocab).block_ranges(cids, block_size)

    def __call__(self, row, input_tokens: int, output_tokens: int) -> bytes:
        """The body of a request; `row`: its trace row or a `prompts.Prompt`."""
        n = int(input_tokens)
        items = token_json(self.seed, row, n, self.vocab) if self.kind == "tokens" else text_json(self.seed, row, n)
        return self.body(items, output_tokens)

    def session_tail(self, ranges: tuple, first: int, block_size: int, n: int, skip: int) -> bytes:
        """Items [skip, n) of a block-keyed prompt (its first `skip` items are the previous turn's
        prompt, already encoded), as JSON text (io.content `Pool.ranges_json`)."""
        return pool(self.seed, self.kind, self.vocab).ranges_json(ranges, first, block_size, n, skip)

    def body(self, items: bytes, output_tokens: int) -> bytes:
        """The body around a prompt's items already encoded (ids joined by commas, or words)."""
        m = int(output_tokens)
        if self.kind == "tokens":
            prompt = b'"prompt":[' + items + b"]"
        else:
            text = b'"' + items + b'"'
            if self.api == "chat":
                prompt = b'"messages":[{"role":"user","content":' + text + b"}]"
            else:
                prompt = b'"prompt":' + text
        lengths = f'"max_tokens":{m}'
        if self.force:
            lengths += f',"min_tokens":{m},"ignore_eos":true'
        return b"{" + self._fixed + b"," + prompt + b"," + lengths.encode() + b"}"


class SessionPrompts:
    """The prompt items (encoded) of a sender's share of a trace with block ids. Every block's
    byte range is computed before the clock starts, and a session's later turn is encoded as the
    previous turn's prompt (kept until then) + the rest: turn k+1 starts with turn k's prompt
    (docs/replay.md), so only the new blocks cost anything."""

    def __init__(self, build: BodyBuilder, part: dict, follower):
        self.build, self.follower = build, follower
        self.ranges = build.block_ranges(part["block_ids"], part["block_size"])
        self.boff, self.bs = part["block_off"].tolist(), int(part["block_size"])
        self.sid, self.row, self.inp = part["session_id"].tolist(), part["row"].tolist(), part["input_tokens"]
        self.sep = b"," if build.kind == "tokens" else b" "
        self.kept: dict = {}  # session -> (tokens, items) of its last prompt built, while a turn follows

    def __call__(self, i: int) -> bytes:
        b, n, first, sid = self.build, int(self.inp[i]), self.boff[i], self.sid[i]
        if (self.boff[i + 1] - first) * self.bs < n:  # a zero-token trace row served as 1 token
            return token_json(b.seed, self.row[i], n, b.vocab) if b.kind == "tokens" else text_json(b.seed, self.row[i], n)
        prev = self.kept.pop(sid, None)
        if prev is not None and prev[0] <= n:
            tail = b.session_tail(self.ranges, first, self.bs, n, prev[0])
            items = prev[1] + self.sep + tail if tail else prev[1]
        else:
            items = b.session_tail(self.ranges, first, self.bs, n, 0)
        if self.follower[i] >= 0:
            self.kept[sid] = (n, items)
        return items
