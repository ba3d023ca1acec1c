"""Engine adapters by name. The adapters import `engine.py`, never this module, so the
registry can import them (lazily: torch and the engines load only when one is made)."""
from __future__ import annotations

from .engine import DEVICES, Engine

ENGINES = ("transformers", "vllm")


def make_engine(name: str, model: str, *, device: str = "auto", seed: int = 0, **options) -> Engine:
    """An engine adapter by name: "transformers" (default; continuous batching) or "vllm"."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    if name == "transformers":
        from .transformers import TransformersEngine

        return TransformersEngine(model, device=device, seed=seed, **options)
    if name == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(model, device=device, seed=seed, **options)
    raise ValueError(f"unknown engine {name!r}; expected one of {ENGINES}")
