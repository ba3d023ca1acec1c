"""Models for replay: a Llama-style model randomly initialised from a config sized by name,
or a local checkpoint directory. Weights do not change serving performance (same shapes,
same kernels), so random weights are enough for timing; the seed is fixed and applied in a
forked RNG context, so the global torch RNG state is left as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

# Llama-style configs by name. tiny: CI on CPU; 1b: Llama-3.2-1B's shape; 8b: Llama-3.1-8B's.
SIZES: dict[str, dict] = {
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                 rope_theta=10000.0, tie_word_embeddings=False),
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
               rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    "8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
               rope_theta=500000.0, tie_word_embeddings=False, rms_norm_eps=1e-5),
}


def describe_model(spec: str) -> str:
    return f"random {spec} (Llama-style)" if spec in SIZES else str(spec)


def llama_config(size: str):
    """A transformers LlamaConfig for a size name, with no EOS (outputs are forced lengths)."""
    from transformers import LlamaConfig

    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; expected one of {tuple(SIZES)} or a checkpoint directory")
    return LlamaConfig(**SIZES[size], bos_token_id=1, eos_token_id=None, pad_token_id=0)


def model_source(spec: str) -> tuple[str, Path | None]:
    """('size', None) for a size name, ('checkpoint', dir) for a directory with weights,
    ('config', dir) for a directory with only config.json (random init from it)."""
    if spec in SIZES:
        return "size", None
    path = Path(os.path.expanduser(str(spec)))
    if not path.is_dir():
        raise FileNotFoundError(f"model {spec!r} not found: give a size name ({', '.join(SIZES)}) or a local "
                                f"checkpoint directory (with config.json)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model directory {path} has no config.json: not a transformers checkpoint")
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin")) or any(path.glob("*.safetensors.index.json"))
    return ("checkpoint" if has_weights else "config"), path


@contextlib.contextmanager
def seeded(seed: int, device: str):
    """torch RNG seeded inside, restored on exit (CPU and, on cuda, the current GPU)."""
    import torch

    devices = [torch.cuda.current_device()] if device == "cuda" and torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def load_model(spec: str, device: str, dtype=None, seed: int = 0, attn_implementation: str = "sdpa"):
    """A causal LM on `device` in eval mode: random weights for a size name or a config-only
    directory, the checkpoint's weights otherwise (local files only; nothing is downloaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kind, path = model_source(spec)
    if dtype is None:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if kind == "checkpoint":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                     attn_implementation=attn_implementation)
        model = model.to(device)
    else:
        config = llama_config(spec) if kind == "size" else AutoConfig.from_pretrained(path, local_files_only=True)
        with seeded(seed, device), torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    return model.eval()


def model_max_len(model) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(cfg, "max_position_embeddings", 0) or 0)


def write_size_config(size: str, directory: str | os.PathLike) -> Path:
    """config.json of a size name in `directory` (for engines that load configs from disk: vLLM)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = dict(SIZES[size], architectures=["LlamaForCausalLM"], model_type="llama", bos_token_id=1,
               eos_token_id=None, pad_token_id=0, hidden_act="silu", torch_dtype="bfloat16")
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    return d
