"""Synthetic prompts of both replayers, a pure function of (seed, trace row):

- token ids (`token_prompt`): what the on-device loop gives its engine and what HTTP replay
  sends as ``prompt: [ids]`` on ``/v1/completions`` (vLLM, SGLang): the same ids for the same
  (seed, row, length, vocabulary). Exactly the trace's input length, ids drawn in
  [TOKEN_LOW, vocab) so they stay clear of the special tokens (pad/bos/eos sit at the bottom
  of most vocabularies, chat-template tokens at the top); small vocabularies (the test models)
  use [RESERVED_IDS, vocab);
- text (`text_prompt`; HTTP chat, TGI, other OpenAI-compatible servers): one word per token
  from WORDS, common English words that are single tokens, with their leading space, in
  byte-level BPE vocabularies (GPT-2, cl100k, Llama 3, Qwen). So n words encode to about n
  tokens; a tokenizer that prepends a BOS adds one, a chat template adds its own tokens. HTTP
  replay records the server's own count beside the target (see docs/replay.md).

A prompt is a window of one random sequence per (seed, kind, vocabulary), starting at a hash
of (seed, row): distinct per request, and built with one slice. The HTTP body builder takes
the same window already encoded as JSON (`token_json`, `text_json`), so building a request
costs microseconds, not a JSON dump.

NumPy only (scripts/measure_prompt_tokens.py loads this file by path).
"""
from __future__ import annotations

import numpy as np

TOKEN_LOW = 1000  # token-id prompts use ids in [TOKEN_LOW, vocab): past byte/special tokens
RESERVED_IDS = 4  # ids [0, RESERVED_IDS) are never in a prompt (pad/bos/eos of the random models live there)
POOL_TOKENS = 1 << 20  # prompts are windows of one random sequence this long (per seed and vocabulary)

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

_MASK = (1 << 64) - 1


def _mix(seed: int, row: int) -> int:
    """splitmix64 of (seed, row): where a row's prompt starts in the pool (cheap, keyed, no state)."""
    z = (seed * 0x9E3779B97F4A7C15 + row * 0xBF58476D1CE4E5B9 + 0x632BE59BD9B4E5F5) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class _Pool:
    """A random sequence of token ids or word indices. Its JSON text (with the offset of every
    item) is encoded on first use, so a prompt of n items is one slice of it as well."""

    def __init__(self, seed: int, kind: str, vocab: int, size: int = POOL_TOKENS):
        rng = np.random.default_rng([seed, 0x5E12E, 1 if kind == "tokens" else 2])
        self.kind, self.size = kind, size
        if kind == "tokens":
            low = TOKEN_LOW if vocab > 2 * TOKEN_LOW else RESERVED_IDS  # a small vocabulary: all but the reserved ids
            self.values = rng.integers(low, max(vocab, low + 1), size=size)
        else:
            self.values = rng.integers(0, len(WORDS), size=size)
        self._text: bytes | None = None
        self._offsets: list | None = None

    def start(self, seed: int, row: int, n: int) -> int:
        if n > self.size:
            raise ValueError(f"prompt of {n} tokens is longer than the prompt pool ({self.size})")
        return _mix(seed, row) % (self.size - n + 1)

    def encode(self) -> None:
        """The JSON text of the whole sequence: ids joined by commas, or words (no escaping needed) by spaces."""
        if self._text is not None:
            return
        if self.kind == "tokens":
            text = ",".join(map(str, self.values.tolist())).encode()
            lengths = np.floor(np.log10(np.maximum(self.values, 1))).astype(np.int64) + 2  # digits + separator
        else:
            words = np.array(WORDS)[self.values]
            text = " ".join(words.tolist()).encode()
            lengths = np.char.str_len(words) + 1
        self._offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()  # item k spans [off[k], off[k+1] - 1)
        self._text = text

    def json(self, seed: int, row: int, n: int) -> bytes:
        k = self.start(seed, row, n)
        self.encode()
        return self._text[self._offsets[k]:self._offsets[k + n] - 1]


_POOLS: dict = {}


def _pool(seed: int, kind: str, vocab: int = 0) -> _Pool:
    key = (seed, kind, int(vocab) if kind == "tokens" else 0)
    if key not in _POOLS:
        _POOLS[key] = _Pool(seed, kind, int(vocab))
    return _POOLS[key]


def token_prompt(seed: int, row: int, n: int, vocab: int) -> np.ndarray:
    """n token ids in [TOKEN_LOW, vocab) ([RESERVED_IDS, vocab) for small vocabularies), keyed by (seed, trace row):
    a window of the seed's random token sequence starting at a hash of the row."""
    p = _pool(seed, "tokens", vocab)
    k = p.start(seed, row, int(n))
    return p.values[k:k + int(n)]


def token_json(seed: int, row: int, n: int, vocab: int) -> bytes:
    """`token_prompt`'s ids as the items of a JSON array (b"17,4023,...")."""
    return _pool(seed, "tokens", vocab).json(seed, row, int(n))


def text_json(seed: int, row: int, n: int) -> bytes:
    """`text_prompt` as UTF-8 bytes (the words need no JSON escaping)."""
    return _pool(seed, "text").json(seed, row, int(n))


def text_prompt(seed: int, row: int, n: int) -> str:
    """n words (about n tokens; see the module doc), keyed by (seed, trace row)."""
    return text_json(seed, row, n).decode()


def prepare(seed: int, kind: str, vocab: int = 0) -> None:
    """Build (and encode) the sequence of a prompt kind now, before the clock starts."""
    _pool(seed, kind, vocab).encode()
