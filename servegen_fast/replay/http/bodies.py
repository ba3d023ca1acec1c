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
        n, m = int(input_tokens), int(output_tokens)
        if self.kind == "tokens":
            prompt = b'"prompt":[' + token_json(self.seed, row, n, self.vocab) + b"]"
        else:
            text = b'"' + text_json(self.seed, row, n) + b'"'
            if self.api == "chat":
                prompt = b'"messages":[{"role":"user","content":' + text + b"}]"
            else:
                prompt = b'"prompt":' + text
        lengths = f'"max_tokens":{m}'
        if self.force:
            lengths += f',"min_tokens":{m},"ignore_eos":true'
        return b"{" + self._fixed + b"," + prompt + b"," + lengths.encode() + b"}"
