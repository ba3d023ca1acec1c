"""The engine interface the on-device replay loop drives (`registry.py` makes the adapters).

An engine takes requests made of prompt token ids and a forced output length, runs them on
its device in its own way (continuous batching, paged KV cache, ...), and reports each
request when it ends, with the times of its first token and its completion on the
replayer's clock (`time.perf_counter`). Adapters wrap real engines (transformers' continuous
batching, vLLM); there is no toy engine of our own.

torch and the engines are imported lazily, inside the adapters.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Completion:
    """One request as the engine reports it when it ends (times on `timing.CLOCK`, seconds)."""

    rid: int
    output_tokens: int  # tokens actually generated
    first_token: float = float("nan")  # when the first output token was produced (nan: not known)
    completed: float = float("nan")  # when the last output token was produced
    started: float = float("nan")  # when the engine took the request out of its queue (nan: not exposed)
    error: str | None = None
    preempted: bool = False  # the engine evicted it and recomputed (first-token time lost where nan)
    cached_tokens: int = -1  # prompt tokens served from the engine's prefix cache (-1: not reported)


@dataclass
class EngineInfo:
    name: str
    model: str
    device: str
    dtype: str
    details: dict = field(default_factory=dict)


class Engine(abc.ABC):
    """What the replay loop needs from an engine. Calls come from one thread (the loop's)."""

    info: EngineInfo

    @abc.abstractmethod
    def start(self) -> None:
        """Warm up (load, compile, capture graphs, run a few throwaway requests) and start serving."""

    @abc.abstractmethod
    def add(self, rid: int, prompt_ids: list[int], output_tokens: int) -> None:
        """Submit a request now; it must generate exactly `output_tokens` tokens (no early stop)."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[Completion]:
        """Requests that ended since the last call; waits up to `timeout` s for the first one."""

    def stats(self) -> dict:
        """A snapshot of memory / KV-cache use, where the engine exposes it (numbers only)."""
        return {}

    @abc.abstractmethod
    def stop(self, abandon: bool = False) -> list[Completion]:
        """Stop serving. abandon=True drops requests in flight; returns the ones that ended meanwhile."""

    @property
    def vocab_size(self) -> int:
        return int(self.info.details.get("vocab_size", 0))

    @property
    def max_model_len(self) -> int:
        return int(self.info.details.get("max_model_len", 0))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU (torch "
                           f"{torch.__version__}); use --device cpu or auto")
    return device
