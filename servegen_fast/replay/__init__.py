"""On-device replay of traces: release each request at its trace time against a real engine
(transformers' continuous batching by default, vLLM where installed) and measure TTFT, TPOT,
end-to-end latency, goodput under SLOs and the replayer's own release lateness.

Importing this package does not import torch; the engines do, when made.
"""
from .api import replay_http, replay_trace
from .plan import ReplayPlan, make_plan
from .results import read_requests, summarize

__all__ = ["ReplayPlan", "make_plan", "replay_trace", "replay_http", "read_requests", "summarize"]
