"""Hugging Face transformers' continuous batching (paged KV cache) as a replay engine.

`model.init_continuous_batching()` gives a ContinuousBatchingManager that runs the
scheduler and the forward passes in a background thread over a paged KV cache
(attention "paged|sdpa" by default, or the flash kernels where installed). Requests go in
with `add_request(input_ids, max_new_tokens=n, eos_token_id=-1, record_timestamps=True)`:
greedy decoding with no EOS, so every request generates exactly n tokens, and the
manager stamps every generated token with `time.perf_counter()` (the replayer's clock).

When the cache runs out, transformers evicts a request and recomputes it from its prompt
plus the tokens made so far ("soft reset"); the first-token stamps made before the reset are
lost, so such a request is reported `preempted` with its first-token time unknown.
"""
from __future__ import annotations

import logging
import math

from ..prompts import RESERVED_IDS
from ..timing import CLOCK
from .engine import Completion, Engine, EngineInfo, resolve_device
from .models import describe_model, load_model, model_max_len

# CPU has no memory probe worth sizing a cache from (transformers would take 90% of RAM):
# a fixed budget of KV tokens instead. On CUDA the cache is sized from free GPU memory.
CPU_KV_TOKENS = 1 << 16
CPU_MAX_BATCH_TOKENS = 2048
WARMUP_REQUESTS = ((16, 4), (48, 2), (8, 8))  # (prompt, output) run before the clock starts


class TransformersEngine(Engine):
    def __init__(self, model: str, *, device: str = "auto", seed: int = 0, dtype: str | None = None,
                 attn_implementation: str = "sdpa", page_size: int | None = None, num_blocks: int | None = None,
                 max_batch_tokens: int | None = None, max_memory_percent: float | None = None,
                 use_cuda_graph: bool | None = None):
        import torch

        self.device = resolve_device(device)
        torch_dtype = getattr(torch, dtype) if dtype else None
        self.model = load_model(model, self.device, torch_dtype, seed, attn_implementation)
        self.seed = seed
        cfg = self.model.config
        self.info = EngineInfo(
            name="transformers", model=describe_model(model), device=self.device, dtype=str(self.model.dtype),
            details={"vocab_size": int(cfg.vocab_size), "max_model_len": model_max_len(self.model),
                     "attn_implementation": attn_implementation, "num_parameters": int(self.model.num_parameters()),
                     "path": "continuous batching (ContinuousBatchingManager, paged KV cache)"})
        page_size = page_size or (32 if self.device == "cpu" else 256)
        if self.device == "cpu":
            num_blocks = num_blocks or math.ceil(CPU_KV_TOKENS / page_size)
            max_batch_tokens = max_batch_tokens or CPU_MAX_BATCH_TOKENS
        self._cb_options = dict(page_size=page_size, num_blocks=num_blocks, max_batch_tokens=max_batch_tokens,
                                max_memory_percent=max_memory_percent, allow_block_sharing=False)
        if use_cuda_graph is not None:
            self._cb_options["use_cuda_graph"] = use_cuda_graph
        self.manager = None
        self._ids: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        gen = GenerationConfig(do_sample=False, eos_token_id=-1, max_new_tokens=1, pad_token_id=0)
        cb = ContinuousBatchingConfig(**{k: v for k, v in self._cb_options.items() if v is not None},
                                      seed=self.seed)
        self.manager = self.model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        self.manager.warmup()
        self.manager.start()
        # throwaway requests: first forward passes (allocations, kernel selection) before the clock
        for i, (p, o) in enumerate(WARMUP_REQUESTS):
            self._submit(f"warmup-{i}", [RESERVED_IDS + j % 97 for j in range(p)], o)
        left = len(WARMUP_REQUESTS)
        while left:
            r = self.manager.get_result(timeout=60)
            if r is None:
                self._check_alive()
                raise RuntimeError("transformers continuous batching: warm-up requests did not finish in 60 s")
            if r.is_finished():
                if r.error:
                    raise RuntimeError(f"transformers continuous batching failed on a warm-up request: {r.error}")
                left -= 1
        cache = self.manager.batch_processor.cache
        page = int(self._cb_options["page_size"])
        self.info.details.update(page_size=page, kv_num_blocks=int(cache.num_blocks),
                                 max_batch_tokens=int(cache.max_batch_tokens),
                                 cache_block_size=page, kv_cache_tokens=page * int(cache.num_blocks))

    def _submit(self, request_id: str, prompt_ids: list[int], output_tokens: int) -> None:
        got = self.manager.add_request(prompt_ids, request_id=request_id, max_new_tokens=int(output_tokens),
                                       record_timestamps=True, eos_token_id=-1)
        if got is None:
            self._check_alive()
            raise RuntimeError(f"transformers continuous batching refused request {request_id}")

    def add(self, rid: int, prompt_ids: list[int], output_tokens: int) -> None:
        key = str(rid)
        self._ids[key] = rid
        self._submit(key, prompt_ids, output_tokens)

    def _check_alive(self) -> None:
        status = self.manager.background_thread_status if self.manager else None
        err = getattr(status, "fatal_error", None)
        if err is not None:
            raise RuntimeError(f"transformers continuous batching stopped: {err}")

    def _convert(self, r) -> Completion | None:
        rid = self._ids.pop(r.request_id, None)
        if rid is None:  # warm-up leftovers
            return None
        n = len(r.generated_tokens)
        ts = r.timestamps or []
        c = Completion(rid=rid, output_tokens=n, started=float(r.lifespan[0]) if r.lifespan[0] > 0 else math.nan)
        if ts and len(ts) == n:
            c.first_token, c.completed = float(ts[0]), float(ts[-1])
        else:
            c.preempted = n > 0
            c.completed = float(ts[-1]) if ts else (float(r.lifespan[1]) if r.lifespan[1] > 0 else CLOCK())
        if r.error is not None:
            c.error = str(r.error)
        return c

    def poll(self, timeout: float) -> list[Completion]:
        out = []
        r = self.manager.get_result(timeout=max(timeout, 0.0))
        while r is not None:
            if r.is_finished():
                c = self._convert(r)
                if c is not None:
                    out.append(c)
            r = self.manager.get_result(timeout=0)
        if not out and self._ids:
            self._check_alive()
            if not self.manager.is_running():
                raise RuntimeError("transformers continuous batching: the generation thread ended with "
                                   f"{len(self._ids)} requests in flight")
        return out

    def stats(self) -> dict:
        import torch

        out = {}
        try:
            bp = self.manager.batch_processor
            out["kv_used_fraction"] = 1.0 - float(bp.cache.compute_free_capacity(relative=True))
            out["running"] = len(bp.scheduler.active_requests)
            out["waiting"] = len(bp.scheduler.waiting_requests)
        except (AttributeError, RuntimeError):  # not started yet, or the thread is between batches
            pass
        if self.device == "cuda":
            out["device_memory_allocated"] = int(torch.cuda.memory_allocated())
            out["device_memory_reserved"] = int(torch.cuda.memory_reserved())
        else:
            try:
                import psutil

                out["host_rss"] = int(psutil.Process().memory_info().rss)
            except ImportError:
                pass
        return out

    def stop(self, abandon: bool = False) -> list[Completion]:
        if self.manager is None:
            return []
        self.manager.stop(block=True, timeout=60, hard_stop=abandon)
        out = []
        while True:
            r = self.manager.output_router.output_queue.get_nowait() if not \
                self.manager.output_router.output_queue.empty() else None
            if r is None:
                break
            if r.is_finished():
                c = self._convert(r)
                if c is not None:
                    out.append(c)
        self.manager.destroy()
        self.manager = None
        return out


def quiet_transformers() -> None:
    """transformers' continuous-batching logger prints to stderr on its own handler: keep it to errors."""
    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)
