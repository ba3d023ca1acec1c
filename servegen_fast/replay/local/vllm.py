"""vLLM's in-process engine (`vllm.LLMEngine`) as a replay engine, where vLLM is installed.

Not installed with servegen-fast and not tested here (vLLM needs a GPU); written against
vLLM's documented offline API (`EngineArgs`, `LLMEngine.from_engine_args`, `add_request`,
`step`, `abort_request`). Size names become a config.json in a temporary directory loaded
with `load_format="dummy"` (random weights); a checkpoint directory loads its weights.
Outputs are forced with `SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True)`.

`LLMEngine.step()` is synchronous, so a worker thread owns the engine: it takes submitted
requests from a queue at each step boundary (where vLLM admits new requests anyway), steps,
and stamps a request's first token and completion when a step returns them, on the
replayer's clock. Prefix caching is on: prompts of traces with sessions share their blocks
(prompts.py), and vLLM's `num_cached_tokens` of each request is recorded.
"""
from __future__ import annotations

import math
import queue
import tempfile
import threading

from ..prompts import RESERVED_IDS
from ..timing import CLOCK
from .engine import Completion, Engine, EngineInfo, resolve_device
from .models import SIZES, describe_model, model_source, write_size_config


def _cache_details(engine) -> dict:
    """The KV cache's block size and capacity in tokens, where this vLLM version exposes them."""
    cfg = getattr(engine, "cache_config", None) or getattr(getattr(engine, "vllm_config", None), "cache_config", None)
    bs, blocks = getattr(cfg, "block_size", None), getattr(cfg, "num_gpu_blocks", None)
    out = {"cache_block_size": bs} if isinstance(bs, int) else {}
    if out and isinstance(blocks, int):
        out["kv_cache_tokens"] = bs * blocks
    return out


class VLLMEngine(Engine):
    def __init__(self, model: str, *, device: str = "auto", seed: int = 0, dtype: str | None = None,
                 gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
                 max_num_batched_tokens: int | None = None, enforce_eager: bool = False):
        try:
            import vllm  # noqa: F401
            from vllm import EngineArgs, LLMEngine
        except ImportError as e:
            raise RuntimeError(f"engine 'vllm' needs vLLM installed (pip install vllm, on a CUDA machine): {e}") from None
        self.device = resolve_device(device)
        if self.device != "cuda":
            raise RuntimeError("engine 'vllm' runs on a CUDA GPU only; use --engine transformers on CPU")
        kind, path = model_source(model)
        self._tmp = None
        load_format = "auto"
        if kind == "size":
            self._tmp = tempfile.TemporaryDirectory(prefix="servegen-fast-vllm-")
            path = write_size_config(model, self._tmp.name)
            load_format = "dummy"
        elif kind == "config":
            load_format = "dummy"
        size_len = SIZES[model]["max_position_embeddings"] if kind == "size" else None
        args = dict(model=str(path), skip_tokenizer_init=True, load_format=load_format, seed=seed,
                    dtype=dtype or "bfloat16", enable_prefix_caching=True, enforce_eager=enforce_eager,
                    max_model_len=max_model_len or (min(size_len, 32768) if size_len else None))
        if gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = gpu_memory_utilization
        if max_num_batched_tokens is not None:
            args["max_num_batched_tokens"] = max_num_batched_tokens
        self.engine = LLMEngine.from_engine_args(EngineArgs(**{k: v for k, v in args.items() if v is not None}))
        mcfg = self.engine.model_config if hasattr(self.engine, "model_config") else None
        vocab = int(mcfg.get_vocab_size()) if mcfg is not None else int(SIZES.get(model, {}).get("vocab_size", 0))
        mlen = int(getattr(mcfg, "max_model_len", 0) or args["max_model_len"] or 0)
        self.info = EngineInfo(name="vllm", model=describe_model(model), device="cuda", dtype=args["dtype"],
                               details={"vocab_size": vocab, "max_model_len": mlen, "load_format": load_format,
                                        "vllm_version": vllm.__version__, "path": "vllm LLMEngine (in-process)",
                                        "prefix_caching": True, **_cache_details(self.engine)})
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._abandon = False
        self._thread = None
        self._error: BaseException | None = None
        self._live: dict[str, dict] = {}
        try:
            from vllm.sampling_params import RequestOutputKind  # noqa: F401

            self._delta = True
        except ImportError:  # older vLLM: cumulative outputs
            self._delta = False

    def _params(self, n: int):
        from vllm import SamplingParams

        kw = dict(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0, detokenize=False)
        if self._delta:  # only the new tokens in each step's output
            from vllm.sampling_params import RequestOutputKind

            kw["output_kind"] = RequestOutputKind.DELTA
        return SamplingParams(**kw)

    def _worker(self) -> None:
        try:
            while True:
                while True:
                    try:
                        rid, ids, n = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    key = str(rid)
                    self._live[key] = {"rid": rid, "n": 0, "first": math.nan, "cached": -1}
                    self.engine.add_request(key, {"prompt_token_ids": ids}, self._params(n))
                if self._stop.is_set() and (self._abandon or not self._live):
                    break
                if not self.engine.has_unfinished_requests():
                    self._stop.wait(0.0005)
                    continue
                outs = self.engine.step()
                now = CLOCK()
                for o in outs:
                    st = self._live.get(o.request_id)
                    if st is None:
                        continue
                    toks = len(o.outputs[0].token_ids) if o.outputs else 0
                    if toks and math.isnan(st["first"]):
                        st["first"] = now
                    cached = getattr(o, "num_cached_tokens", None)
                    if isinstance(cached, int) and cached >= 0:
                        st["cached"] = cached
                    st["n"] = st["n"] + toks if self._delta else toks
                    if o.finished:
                        del self._live[o.request_id]
                        self._outbox.put(Completion(rid=st["rid"], output_tokens=st["n"], first_token=st["first"],
                                                    completed=now, started=math.nan, cached_tokens=st["cached"]))
        except BaseException as e:  # reported to the loop by poll()
            self._error = e

    def start(self) -> None:
        # warm-up requests, run to completion before the clock
        for i, (p, o) in enumerate(((16, 4), (64, 2), (8, 8))):
            self.engine.add_request(f"warmup-{i}", {"prompt_token_ids": [RESERVED_IDS + j % 97 for j in range(p)]},
                                    self._params(o))
        while self.engine.has_unfinished_requests():
            self.engine.step()
        self._thread = threading.Thread(target=self._worker, name="vllm-replay", daemon=True)
        self._thread.start()

    def add(self, rid: int, prompt_ids: list[int], output_tokens: int) -> None:
        self._inbox.put((rid, prompt_ids, int(output_tokens)))

    def poll(self, timeout: float) -> list[Completion]:
        out = []
        try:
            out.append(self._outbox.get(timeout=max(timeout, 0.0)) if timeout > 0 else self._outbox.get_nowait())
            while True:
                out.append(self._outbox.get_nowait())
        except queue.Empty:
            pass
        if self._error is not None:
            raise RuntimeError(f"vLLM engine failed: {self._error}")
        return out

    def stats(self) -> dict:
        import torch

        return {"device_memory_allocated": int(torch.cuda.memory_allocated()),
                "device_memory_reserved": int(torch.cuda.memory_reserved())}

    def stop(self, abandon: bool = False) -> list[Completion]:
        self._abandon = abandon
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        out = self.poll(0)
        for key, st in list(self._live.items()):
            try:
                self.engine.abort_request([key])
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
            out.append(Completion(rid=st["rid"], output_tokens=st["n"], first_token=st["first"],
                                  error="abandoned at stop"))
        self._live.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
        return out
