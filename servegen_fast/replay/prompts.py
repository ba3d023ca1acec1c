"""Request bodies for HTTP replay: prompts with the trace's input lengths, forced output lengths.

Prompts are a pure function of (seed, trace row), like the on-device replayer's:

- token ids (``prompt: [ids]`` on ``/v1/completions``, accepted by vLLM and SGLang): exactly
  the trace's input length, ids drawn in [TOKEN_LOW, vocab) so they stay clear of the special
  tokens (pad/bos/eos sit at the bottom of most vocabularies, chat-template tokens at the top);
- text (chat, TGI, other OpenAI-compatible servers): one word per token from WORDS, common
  English words that are single tokens, with their leading space, in byte-level BPE
  vocabularies (GPT-2, cl100k, Llama 3, Qwen). So n words encode to about n tokens; a
  tokenizer that prepends a BOS adds one, a chat template adds its own tokens. The server's
  own count (``usage.prompt_tokens``) is recorded per request beside the target, so the
  difference is measured on every run (see docs/replay.md). The local test server
  (`servegen_fast.replay.server`) tokenizes one word per token: exact there.

Output lengths: ``max_tokens = n`` always; vLLM and SGLang also get ``min_tokens = n`` and
``ignore_eos: true`` so that exactly n tokens are generated.
"""
from __future__ import annotations

import json

import numpy as np

SERVER_TYPES = ("vllm", "sglang", "tgi", "openai")
APIS = ("completions", "chat")
PROMPT_KINDS = ("auto", "tokens", "text")
TOKEN_LOW = 1000  # token-id prompts use ids in [TOKEN_LOW, vocab): past byte/special tokens
DEFAULT_VOCAB = 32000  # upper bound for token ids when the server does not say (every common vocab is larger)

# Common English words, each a single token (with its leading space) in byte-level BPE vocabularies.
WORDS = tuple("""
the of and to in is that for it as was with be by on not he this are or his from at which but have an had they
you were their one all we can her has there been if more when will would who so no she other its may these about
some what out time only could new them him over any such made first after most also into used two man world life
well water day good year work way back people long make part little great old state city each many much both
house game place last high found under world while where three name line small right large show point home house
hand end still form same few left light own country need high land night head find order among power public
every group best story water early city room school late fact land white open house black body sound family
""".split())
WORDS = tuple(dict.fromkeys(WORDS))  # unique, order kept


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


def token_prompt(seed: int, row: int, n: int, vocab: int, low: int = TOKEN_LOW) -> np.ndarray:
    """n token ids in [low, vocab), keyed by (seed, trace row)."""
    low = min(low, max(vocab - 1, 1))
    rng = np.random.default_rng([seed, row, 1])
    return rng.integers(low, max(vocab, low + 1), size=int(n))


def text_prompt(seed: int, row: int, n: int) -> str:
    """n words (about n tokens; see the module doc), keyed by (seed, trace row)."""
    rng = np.random.default_rng([seed, row, 2])
    idx = rng.integers(0, len(WORDS), size=int(n))
    return " ".join([WORDS[i] for i in idx.tolist()])


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

    def __call__(self, row: int, input_tokens: int, output_tokens: int) -> bytes:
        n, m = int(input_tokens), int(output_tokens)
        if self.kind == "tokens":
            prompt = b'"prompt":[' + ",".join(map(str, token_prompt(self.seed, row, n, self.vocab).tolist())).encode() + b"]"
        else:
            text = json.dumps(text_prompt(self.seed, row, n))
            if self.api == "chat":
                prompt = b'"messages":[{"role":"user","content":' + text.encode() + b"}]"
            else:
                prompt = b'"prompt":' + text.encode()
        lengths = f'"max_tokens":{m}'
        if self.force:
            lengths += f',"min_tokens":{m},"ignore_eos":true'
        return b"{" + self._fixed + b"," + prompt + b"," + lengths.encode() + b"}"
