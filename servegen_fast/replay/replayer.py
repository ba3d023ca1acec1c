"""replay_trace: read a trace, plan, start an engine, run the loop, write the results.

Ctrl-C (SIGINT) during a run stops the releases, abandons the requests in flight and writes
the results so far, marked ``complete: false``; a second Ctrl-C raises KeyboardInterrupt.
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from .. import __version__
from .engine import make_engine
from .loop import Progress, make_plan, run
from .models import model_source
from .results import write_results


def replay_trace(trace, output, *, engine: str = "transformers", model: str = "tiny", device: str = "auto",
                 seed: int = 0, time_scale: float = 1.0, start: float | None = None, end: float | None = None,
                 clients=None, max_requests: int | None = None, afap: bool = False,
                 max_model_len: int | None = None, slo_ttft: float | None = None, slo_tpot: float | None = None,
                 plot: bool = False, progress: bool = False, engine_options: dict | None = None,
                 log=None) -> dict:
    """Replay `trace` (a path or an Arrow table) on an engine; write results to `output`; return the summary."""
    import pyarrow as pa

    from ..trace import read_trace

    log = log or (lambda msg: None)
    if isinstance(trace, pa.Table):
        table, source = trace, "<table>"
    else:
        source = str(trace)
        table = read_trace(trace)
    if engine == "transformers":
        model_source(model)  # a missing model is an error before anything is loaded
    # check the trace before loading a model (max_model_len is applied once the model is known)
    make_plan(table, start=start, end=end, clients=clients, max_requests=max_requests, time_scale=time_scale,
              afap=afap, source=source)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a directory")
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
        log(f"loading {engine} engine, model {model}")
        eng = make_engine(engine, model, device=device, seed=seed, **(engine_options or {}))
        limit = max_model_len or eng.max_model_len or None
        if limit and eng.max_model_len:
            limit = min(limit, eng.max_model_len)
        plan = make_plan(table, start=start, end=end, clients=clients, max_requests=max_requests,
                         time_scale=time_scale, afap=afap, max_model_len=limit, source=source)
        log("warming up")
        span = float(plan.scheduled.max())
        bar = Progress(len(plan), span, enabled=progress)
        try:
            eng.start()
            rec = run(eng, plan, seed=seed, should_stop=stop.is_set, progress=bar,
                      on_start=lambda: log(f"replay started: {len(plan)} requests over {span:.1f} s"))
        except BaseException:
            try:  # leave no engine thread running behind an error
                eng.stop(abandon=True)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    metadata = {"tool": "servegen-fast replay", "version": __version__, "trace": source,
                "engine": {"name": eng.info.name, "model": eng.info.model, "device": eng.info.device,
                           "dtype": eng.info.dtype, **eng.info.details},
                "options": dict(plan.options, seed=seed), "interrupted": rec.interrupted}
    summary = write_results(out, rec, metadata=metadata, slo_ttft=slo_ttft, slo_tpot=slo_tpot)
    if plot:
        from .plots import plot_results

        summary["plots"] = [str(p) for p in plot_results(out)]
    return summary
