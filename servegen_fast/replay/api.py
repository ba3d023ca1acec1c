"""The two replays as library calls: `replay_trace` (on-device: plan, start an engine, run the
release loop) and `replay_http` (plan, probe the target, run the sender); both write the same
results (`results.py`).

Ctrl-C (SIGINT) during a run stops the releases, abandons the requests in flight and writes
the results so far, marked ``complete: false``; a second Ctrl-C raises KeyboardInterrupt.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from ..version import __version__
from ..model.fields import ITEM_FIELDS
from ..progress import ProgressLine
from .local.loop import run
from .local.models import model_source
from .local.registry import make_engine
from .plan import make_plan
from .results import RunRecord, write_results
from .timing import show_progress


def replay_trace(trace, output, *, engine: str = "transformers", model: str = "tiny", device: str = "auto",
                 seed: int = 0, time_scale: float = 1.0, start: float | None = None, end: float | None = None,
                 clients=None, max_requests: int | None = None, afap: bool = False,
                 max_model_len: int | None = None, slo_ttft: float | None = None, slo_tpot: float | None = None,
                 plot: bool = False, progress: bool = False, engine_options: dict | None = None,
                 release: str = "auto", cache_block_size: int | None = None, kv_cache_tokens: int | None = None,
                 log=None) -> dict:
    """Replay `trace` (a path or an Arrow table) on an engine; write results to `output`; return the summary."""
    log = log or (lambda msg: None)
    table, source = _read(trace)
    if engine == "transformers":
        model_source(model)  # a missing model is an error before anything is loaded
    # check the trace before loading a model (max_model_len is applied once the model is known)
    make_plan(table, start=start, end=end, clients=clients, max_requests=max_requests, time_scale=time_scale,
              afap=afap, release=release, source=source)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a directory")
    with _sigint_stops() as stop:
        log(f"loading {engine} engine, model {model}")
        eng = make_engine(engine, model, device=device, seed=seed, **(engine_options or {}))
        limit = max_model_len or eng.max_model_len or None
        if limit and eng.max_model_len:
            limit = min(limit, eng.max_model_len)
        plan = make_plan(table, start=start, end=end, clients=clients, max_requests=max_requests,
                         time_scale=time_scale, afap=afap, max_model_len=limit, release=release, source=source)
        log("warming up")
        span = float(plan.scheduled.max())
        try:
            eng.start()
            rec = run(eng, plan, seed=seed, should_stop=stop.is_set, progress=ProgressLine(progress) if progress else None,
                      on_start=lambda: log(f"replay started: {len(plan)} requests over {span:.1f} s"))
        except BaseException:
            try:  # leave no engine thread running behind an error
                eng.stop(abandon=True)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
    d = eng.info.details
    rec.expected_cached, cache = _expected(plan, rec.released, cache_block_size or d.get("cache_block_size"),
                                           kv_cache_tokens or d.get("kv_cache_tokens"))
    metadata = {"tool": "servegen-fast replay", "version": __version__, "trace": source,
                "engine": {"name": eng.info.name, "model": eng.info.model, "device": eng.info.device,
                           "dtype": eng.info.dtype, **eng.info.details},
                "options": dict(plan.options, seed=seed), "prefix_cache_model": cache, "interrupted": rec.interrupted}
    summary = write_results(out, rec, metadata=metadata, slo_ttft=slo_ttft, slo_tpot=slo_tpot)
    if plot:
        from .plots import plot_results

        summary["plots"] = [str(p) for p in plot_results(out)]
    return summary


@contextlib.contextmanager
def _sigint_stops():
    """Ctrl-C sets the yielded event (stop releasing, write the results so far); a second one aborts."""
    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\ninterrupted: stopping releases, writing the results so far (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        yield stop
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _read(trace):
    import pyarrow as pa

    from ..io.trace import read_trace

    if isinstance(trace, pa.Table):
        return trace, "<table>"
    return read_trace(trace), str(trace)


def replay_http(trace, output, *, target: str, api: str = "completions", model_name: str | None = None,
                server_type: str = "vllm", prompt: str = "auto", vocab: int | None = None,
                concurrency: int = 1024, timeout: float = 600.0, retries: int = 0, workers: int = 1,
                api_key: str | None = None, extra_body: dict | None = None, loop: str = "auto", seed: int = 0,
                time_scale: float = 1.0, start: float | None = None, end: float | None = None, clients=None,
                max_requests: int | None = None, afap: bool = False, max_model_len: int | None = None,
                slo_ttft: float | None = None, slo_tpot: float | None = None, plot: bool = False,
                progress: bool = False, release: str = "auto", cache_block_size: int | None = None,
                kv_cache_tokens: int | None = None, log=None, send=None) -> dict:
    """Replay `trace` (a path or an Arrow table) against an OpenAI-compatible server at `target`;
    write the same results as on-device replay to `output` (plus HTTP columns); return the summary.
    `send`: what releases the plan (default `http.workers.send_plan`, this machine's processes;
    `servegen_fast.distributed.RaySend` for actors on a cluster), same signature and result."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from .http.options import HttpOptions, probe
    from .http.workers import send_plan

    send = send or send_plan
    log = log or (lambda msg: None)
    table, source = _read(trace)
    for name in ITEM_FIELDS:  # the multimodal item-token columns
        if name in table.column_names and pc.sum(pc.list_value_length(table.column(name))).as_py():
            raise ValueError(f"{source}: multimodal trace ({name}): HTTP replay sends text or token prompts only; "
                             "multimodal inputs are not supported yet (drop the column to replay the text part)")
    opts = HttpOptions(target=target, api=api, model=model_name, server_type=server_type, prompt=prompt, vocab=vocab,
                       concurrency=concurrency, timeout=timeout, retries=retries, workers=workers, seed=seed,
                       api_key=api_key, extra_body=dict(extra_body or {}), loop=loop)
    opts.validate()
    make_plan(table, start=start, end=end, clients=clients, max_requests=max_requests, time_scale=time_scale,
              afap=afap, release=release, source=source)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a directory")
    log(f"probing {target}")
    meta = probe(opts)
    limit = max_model_len or meta.get("max_model_len")
    plan = make_plan(table, start=start, end=end, clients=clients, max_requests=max_requests, time_scale=time_scale,
                     afap=afap, max_model_len=limit, release=release, source=source)
    span = float(plan.scheduled.max())
    bar = ProgressLine(True) if progress and opts.workers == 1 else None  # one line: one sending process
    with _sigint_stops() as stop:
        r = send(plan, opts, meta, should_stop=stop.is_set, progress=bar,
                      on_start=lambda: log(f"replay started: {len(plan)} requests over {span:.1f} s to {target} "
                                           f"({opts.workers} sending process{'es' if opts.workers > 1 else ''})"))
    if bar is not None:
        done = sum(1 for x in r["status"] if x not in ("in_flight", "not_released"))
        show_progress(bar, int(np.isfinite(r["released"]).sum()), done, len(plan), r["end"], span, final=True,
                      in_flight=0)  # all ended (a request can fail before it is written: not released - done)
    interrupted = stop.is_set() or bool(r.get("incomplete"))  # e.g. a sender lost on a cluster
    n = len(plan)
    extra = [
        (pa.field("http_status", pa.int32(), nullable=False), r["http_status"]),  # 0: no response
        (pa.field("error_kind", pa.string()), r["error_kind"]),
        (pa.field("attempts", pa.int32(), nullable=False), r["attempts"]),
        (pa.field("server_input_tokens", pa.int64()),  # usage.prompt_tokens (null: not reported)
         [None if v < 0 else int(v) for v in r["server_input_tokens"].tolist()]),
        (pa.field("itl", pa.list_(pa.float32())), r["itl"]),  # gaps between token events (s)
    ]
    rec = RunRecord(plan=plan, t0=0.0, released=r["released"], started=np.full(n, np.nan),
                    first_token=r["first_token"], completed=r["completed"], generated=r["generated"],
                    preempted=np.zeros(n, bool), status=r["status"], errors=r["error"], stats=r["stats"],
                    interrupted=interrupted, wall_end=r["end"], extra=extra, scheduled=_scheduled(plan, r["scheduled"]),
                    cached=r["server_cached_tokens"])
    rec.expected_cached, cache = _expected(plan, rec.released, cache_block_size or meta.get("cache_block_size"),
                                           kv_cache_tokens or meta.get("kv_cache_tokens"))
    metadata = {"tool": "servegen-fast replay", "version": __version__, "trace": source,
                "engine": {"name": "http", "model": meta["model"], "device": target, "dtype": "-",
                           "api": api, "server_type": server_type, "prompt": opts.prompt},
                "options": dict(plan.options, seed=seed, concurrency=concurrency, timeout=timeout, retries=retries,
                                workers=opts.workers, loop=opts.loop),
                "prefix_cache_model": cache,
                "clock": r.get("clock") or {"name": "time.perf_counter", "run_start": r["t0"]},
                "interrupted": interrupted}
    summary = write_results(out, rec, metadata=metadata, slo_ttft=slo_ttft, slo_tpot=slo_tpot)
    if plot:
        from .plots import plot_results

        summary["plots"] = [str(p) for p in plot_results(out)]
    return summary


def _scheduled(plan, got):
    """The release times the senders asked for; where none came back (a lost sender), the plan's
    (a closed-loop later turn: none, NaN)."""
    import numpy as np

    from .timing import Releases

    own = Releases(plan.scheduled, closed=plan.closed_loop, session_id=plan.session_id, turn=plan.turn,
                   think_time=plan.think_time).scheduled
    got = np.asarray(got, np.float64)
    return np.where(np.isfinite(got), got, own)


def _expected(plan, released, block_size, capacity):
    """Expected cached prompt tokens (replay/cache.py) of the released requests in release order,
    and the model's parameters for the metadata; (None, None) without block ids."""
    import numpy as np

    from .cache import DEFAULT_BLOCK_SIZE, expected_cached

    if plan.block_ids is None:
        return None, None
    block_size = int(block_size or DEFAULT_BLOCK_SIZE)
    done = np.flatnonzero(np.isfinite(released))
    order = done[np.argsort(released[done], kind="stable")]
    return expected_cached(plan, order, block_size, capacity), {"block_size": block_size, "kv_cache_tokens": capacity}
