"""Synthetic prompts of both replayers (the content itself is io/content.py's, shared with export):

- token ids (`token_prompt`, `token_json`): what the on-device loop gives its engine and what
  HTTP replay sends as ``prompt: [ids]`` on ``/v1/completions`` (vLLM, SGLang): the same ids for
  the same request. Exactly the served input length, ids in [TOKEN_LOW, vocab) ([RESERVED_IDS,
  vocab) for small vocabularies);
- text (`text_json`; HTTP chat, TGI, other OpenAI-compatible servers): one word per token from
  WORDS, single tokens with their leading space in byte-level BPE vocabularies. A tokenizer that
  prepends a BOS adds one, a chat template its own tokens; HTTP replay records the server's count.

`Prompt` says what a request's content is keyed by: a trace without sessions, its row (a window
of the seed's random sequence starting at a hash of (seed, row): distinct per request); a trace
with sessions, its blocks' content ids (io/blocks.py `content_ids`): block b's tokens are a keyed
function of its id, so equal block ids give equal tokens and a turn's prompt is the previous
turn's prompt, then the previous output (as the trace counts it), then its new blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.content import RESERVED_IDS, TOKEN_LOW, WORDS, pool  # noqa: F401 - re-exported

__all__ = ["Prompt", "token_prompt", "token_json", "text_json", "text_prompt", "prepare", "WORDS", "TOKEN_LOW",
           "RESERVED_IDS"]


@dataclass(frozen=True)
class Prompt:
    """What a request's prompt is keyed by: its trace row, or (with sessions) its blocks' content ids."""

    row: int
    blocks: np.ndarray | None = None  # content ids (int64), one per block of the trace's block size
    block_size: int = 0
    ranges: tuple | None = None  # (io.content `Pool.block_ranges` of many blocks, first, end): computed ahead


def _key(p, n: int) -> Prompt:
    p = p if isinstance(p, Prompt) else Prompt(int(p))
    blocks = len(p.blocks) if p.blocks is not None else (p.ranges[2] - p.ranges[1] if p.ranges else None)
    if blocks is not None and blocks * p.block_size < n:  # a zero-token trace row served as 1 token
        return Prompt(p.row)
    return p


def token_prompt(seed: int, p, n: int, vocab: int) -> np.ndarray:
    """n token ids of request `p` (a Prompt or a trace row)."""
    n = int(n)
    p = _key(p, n)
    pl = pool(seed, "tokens", vocab)
    if p.blocks is not None:
        return pl.block_values(p.blocks, p.block_size, n)
    k = pl.start(seed, p.row, n)
    return pl.values[k:k + n]


def _json(seed: int, p, n: int, kind: str, vocab: int = 0) -> bytes:
    p = _key(p, int(n))
    pl = pool(seed, kind, vocab)
    if p.ranges is not None:
        return pl.ranges_json(p.ranges[0], p.ranges[1], p.block_size, int(n))
    if p.blocks is not None:
        return pl.block_json(p.blocks, p.block_size, int(n))
    return pl.json(seed, p.row, int(n))


def token_json(seed: int, p, n: int, vocab: int) -> bytes:
    """`token_prompt`'s ids as the items of a JSON array (b"17,4023,...")."""
    return _json(seed, p, n, "tokens", vocab)


def text_json(seed: int, p, n: int) -> bytes:
    """n words of request `p` as UTF-8 bytes (the words need no JSON escaping)."""
    return _json(seed, p, n, "text")


def text_prompt(seed: int, p, n: int) -> str:
    """n words (about n tokens; see the module doc) of request `p`."""
    return text_json(seed, p, n).decode()


def prepare(seed: int, kind: str, vocab: int = 0) -> None:
    """Build (and encode) the sequence of a prompt kind now, before the clock starts."""
    pool(seed, kind, vocab).encode()
