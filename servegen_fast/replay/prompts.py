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
RESERVED_IDS = 4  # the floor instead for vocabularies under 2 * TOKEN_LOW (as models.RESERVED_IDS)
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


POOL_TOKENS = 1 << 20  # prompts are windows of one random sequence this long (per seed and vocabulary)
_MASK = (1 << 64) - 1


def _mix(seed: int, row: int) -> int:
    """splitmix64 of (seed, row): where a row's prompt starts in the pool (cheap, keyed, no state)."""
    z = (seed * 0x9E3779B97F4A7C15 + row * 0xBF58476D1CE4E5B9 + 0x632BE59BD9B4E5F5) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class _Pool:
    """A random sequence of tokens or words, encoded once as JSON text with the offset of every item,
    so that a prompt of n items is one slice: building a request costs microseconds, not a JSON dump."""

    def __init__(self, seed: int, kind: str, vocab: int = DEFAULT_VOCAB, low: int = TOKEN_LOW, size: int = POOL_TOKENS):
        rng = np.random.default_rng([seed, 0x5E12E, 1 if kind == "tokens" else 2])
        if kind == "tokens":
            if vocab <= 2 * low:  # a small vocabulary (the test models): all but the reserved ids
                low = RESERVED_IDS
            items = rng.integers(low, max(vocab, low + 1), size=size)
            self.values = items
            text = ",".join(map(str, items.tolist())).encode()
            lengths = np.floor(np.log10(np.maximum(items, 1))).astype(np.int64) + 2  # digits + separator
        else:
            idx = rng.integers(0, len(WORDS), size=size)
            self.values = idx
            words = np.array(WORDS)[idx]
            text = " ".join(words.tolist()).encode()
            lengths = np.char.str_len(words) + 1
        self.text = text
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()  # item k spans [off[k], off[k+1] - 1)
        self.size = size

    def start(self, seed: int, row: int, n: int) -> int:
        return _mix(seed, row) % (self.size - n + 1)

    def slice(self, seed: int, row: int, n: int) -> bytes:
        if n > self.size:
            raise ValueError(f"prompt of {n} tokens is longer than the prompt pool ({self.size})")
        k = self.start(seed, row, n)
        return self.text[self.offsets[k]:self.offsets[k + n] - 1]


_POOLS: dict = {}


def _pool(seed: int, kind: str, vocab: int = DEFAULT_VOCAB) -> _Pool:
    key = (seed, kind, vocab if kind == "tokens" else 0)
    if key not in _POOLS:
        _POOLS[key] = _Pool(seed, kind, vocab)
    return _POOLS[key]


def token_prompt(seed: int, row: int, n: int, vocab: int) -> np.ndarray:
    """n token ids in [TOKEN_LOW, vocab) ([RESERVED_IDS, vocab) for small vocabularies), keyed by (seed, trace row):
    a window of the seed's random token sequence starting at a hash of the row."""
    p = _pool(seed, "tokens", vocab)
    k = p.start(seed, row, int(n))
    return p.values[k:k + int(n)]


def text_prompt(seed: int, row: int, n: int) -> str:
    """n words (about n tokens; see the module doc), keyed by (seed, trace row)."""
    return _pool(seed, "text").slice(seed, row, int(n)).decode()


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
        _pool(seed, prompt_kind, self.vocab)  # built now, before any release

    def __call__(self, row: int, input_tokens: int, output_tokens: int) -> bytes:
        n, m = int(input_tokens), int(output_tokens)
        if self.kind == "tokens":
            prompt = b'"prompt":[' + _pool(self.seed, "tokens", self.vocab).slice(self.seed, row, n) + b"]"
        else:  # the words need no JSON escaping
            text = b'"' + _pool(self.seed, "text").slice(self.seed, row, n) + b'"'
            if self.api == "chat":
                prompt = b'"messages":[{"role":"user","content":' + text + b"}]"
            else:
                prompt = b'"prompt":' + text
        lengths = f'"max_tokens":{m}'
        if self.force:
            lengths += f',"min_tokens":{m},"ignore_eos":true'
        return b"{" + self._fixed + b"," + prompt + b"," + lengths.encode() + b"}"
