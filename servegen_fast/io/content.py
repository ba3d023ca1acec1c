"""Synthetic prompt content, one implementation for replay (replay/prompts.py) and export
(io/export.py): token ids or words, as windows of one random sequence per (seed, kind,
vocabulary).

- Row-keyed (`Pool.start`): a request's prompt is the window starting at a hash of (seed, row),
  for traces without sessions.
- Block-keyed (`block_json`, `block_values`): the tokens of a KV block are the window of the
  block size starting at a hash of its *content id* (io/blocks.py `content_ids`: the block's id
  as if it were full), so equal ids give equal tokens or words, a turn's prompt starts with the
  previous turn's prompt, and a prompt is a join of one slice per block.

Token ids lie in [TOKEN_LOW, vocab) (clear of special tokens at both ends of a vocabulary),
[RESERVED_IDS, vocab) for vocabularies under 2,000 (the test models). Words are WORDS, common
English words that are one token with their leading space in byte-level BPE vocabularies
(measured: scripts/measure_prompt_tokens.py). The JSON text of the whole sequence (with every
item's offset) is encoded once, so a prompt costs one slice per block, not a JSON dump.

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


def mix(seed: int, key: int) -> int:
    """splitmix64 of (seed, key): where a row's or block's window starts (cheap, keyed, no state)."""
    z = (seed * 0x9E3779B97F4A7C15 + key * 0xBF58476D1CE4E5B9 + 0x632BE59BD9B4E5F5) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def mix_array(seed: int, keys) -> np.ndarray:
    """`mix(seed, key & MASK)` for every key of an int64 array (uint64 arithmetic wraps as & MASK does)."""
    k = np.asarray(keys, np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E5F5) & _MASK) + k * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class Pool:
    """A random sequence of token ids or word indices, and its JSON text with item offsets."""

    def __init__(self, seed: int, kind: str, vocab: int, size: int = POOL_TOKENS):
        rng = np.random.default_rng([seed, 0x5E12E, 1 if kind == "tokens" else 2])
        self.seed, self.kind, self.size = seed, kind, size
        self.separator = b"," if kind == "tokens" else b" "
        if kind == "tokens":
            low = TOKEN_LOW if vocab > 2 * TOKEN_LOW else RESERVED_IDS  # a small vocabulary: all but the reserved ids
            self.values = rng.integers(low, max(vocab, low + 1), size=size)
        else:
            self.values = rng.integers(0, len(WORDS), size=size)
        self._text: bytes | None = None
        self._offsets: list | None = None
        self._off: np.ndarray | None = None

    def start(self, seed: int, key: int, n: int) -> int:
        if n > self.size:
            raise ValueError(f"prompt of {n} tokens is longer than the prompt pool ({self.size})")
        return mix(seed, key) % (self.size - n + 1)

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
        self._off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._offsets = self._off.tolist()  # item k spans [off[k], off[k+1] - 1)
        self._text = text

    def json(self, seed: int, row: int, n: int) -> bytes:
        """The row-keyed window of n items as JSON text."""
        k = self.start(seed, row, n)
        self.encode()
        return self._text[self._offsets[k]:self._offsets[k + n] - 1]

    def block_ranges(self, cids, block_size: int) -> tuple:
        """For blocks with content ids `cids`: lists of the first item of each block's window, its
        first byte in the JSON text, and its end byte when full; computed for many blocks at once
        (a sender does it for its whole share before the clock starts)."""
        self.encode()
        start = (mix_array(self.seed, cids) % np.uint64(self.size - block_size + 1)).astype(np.int64)
        return start.tolist(), self._off[start].tolist(), (self._off[start + block_size] - 1).tolist()

    def ranges_json(self, ranges: tuple, first: int, block_size: int, n: int, skip: int = 0) -> bytes:
        """Items [skip, n) as JSON text, from the blocks first, first + 1, ... of `ranges`
        (`block_ranges`); the last block may be partial."""
        if skip >= n:
            return b""
        start, lo, hi = ranges
        nb, b0 = (n + block_size - 1) // block_size, skip // block_size
        a, b = lo[first + b0:first + nb], hi[first + b0:first + nb]
        if skip % block_size:
            a[0] = self._offsets[start[first + b0] + skip % block_size]
        b[-1] = self._offsets[start[first + nb - 1] + n - (nb - 1) * block_size] - 1
        text = self._text
        return self.separator.join([text[x:y] for x, y in zip(a, b)])

    def block_json(self, cids, block_size: int, n: int) -> bytes:
        """n items whose block b (of `block_size`) is the window keyed by content id cids[b], as JSON text."""
        nb = (n + block_size - 1) // block_size
        return self.ranges_json(self.block_ranges(np.asarray(cids)[:nb], block_size), 0, block_size, n)

    def block_values(self, cids, block_size: int, n: int) -> np.ndarray:
        """The items of `block_json` as an array (token ids, or word indices)."""
        nb = (n + block_size - 1) // block_size
        starts = np.asarray(self.block_ranges(np.asarray(cids)[:nb], block_size)[0], np.int64)
        pos = np.arange(n)
        return self.values[starts[pos // block_size] + pos % block_size]


_POOLS: dict = {}


def pool(seed: int, kind: str, vocab: int = 0) -> Pool:
    """The sequence of (seed, kind, vocabulary), made once per process."""
    key = (seed, kind, int(vocab) if kind == "tokens" else 0)
    if key not in _POOLS:
        _POOLS[key] = Pool(seed, kind, int(vocab))
    return _POOLS[key]


def block_words(cids, block_size: int, n: int, seed: int = 0) -> str:
    """n words, block b keyed by content id cids[b] (the vLLM export's prompts; text replay's)."""
    return pool(seed, "text").block_json(cids, block_size, n).decode()
