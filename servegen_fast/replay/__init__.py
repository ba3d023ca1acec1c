"""Replay of traces: release each request at its trace time, never early, and measure TTFT,
TPOT, end-to-end latency, goodput under SLOs and the replayer's own release lateness.

Two replayers share the plan (`plan.py`), the clock and release wait (`timing.py`), the
prompts (`prompts.py`) and the results (`results.py`):

- on-device (`replay_trace`, `local/`): a real engine on this machine (transformers'
  continuous batching by default, vLLM where installed);
- over HTTP (`replay_http`, `http/`): any OpenAI-compatible streaming server (vLLM, SGLang,
  TGI, `servegen-fast serve`), with the standard library only.

Importing this package imports neither torch nor aiohttp; an engine or the server does, when made.
"""
from .api import replay_http, replay_trace
from .plan import ReplayPlan, make_plan
from .results import read_requests, summarize

__all__ = ["ReplayPlan", "make_plan", "replay_trace", "replay_http", "read_requests", "summarize"]
