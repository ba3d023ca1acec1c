"""`servegen-fast replay`: arguments -> replay.api (on-device engine or HTTP target)."""
from __future__ import annotations

import argparse
import json
import sys

from .args import add_release, parse_seconds, positive


def _clients(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"clients must be comma-separated ids, got {text!r}") from None


def add_arguments(sub) -> None:
    r = sub.add_parser("replay", help="replay a trace against an on-device engine, or an HTTP server with --target",
                       description="Release each request of a trace at its time against a real inference engine "
                                   "(transformers continuous batching, or vLLM) and measure TTFT, TPOT, end-to-end "
                                   "latency, goodput under SLOs and release lateness. See docs/replay.md.")
    r.add_argument("trace", help="trace file or partitioned directory")
    r.add_argument("--output", "-o", required=True, help="results directory (requests.arrow, summary.json, ...)")
    e = r.add_argument_group("engine")
    e.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                   help="transformers: continuous batching with a paged KV cache (default); vllm: where installed")
    e.add_argument("--model", default="tiny",
                   help="a size name for a random Llama-style model (tiny, 1b, 8b) or a local checkpoint directory "
                        "(default: tiny)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    e.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="model dtype (default: bfloat16 on cuda, float32 on cpu)")
    e.add_argument("--seed", type=int, default=0, help="seed of the random weights and the prompt token ids")
    e.add_argument("--max-model-len", type=int, default=None,
                   help="fit prompt + output into this many tokens (default: the model's context)")
    e.add_argument("--attn", default=None, help="transformers attention implementation (default: sdpa, paged)")
    e.add_argument("--page-size", type=int, default=None, help="KV-cache page size in tokens")
    e.add_argument("--num-blocks", type=int, default=None,
                   help="KV-cache blocks (default: from free GPU memory; 64 Ki tokens on CPU)")
    e.add_argument("--max-batch-tokens", type=int, default=None, help="tokens per forward pass")
    e.add_argument("--gpu-memory", type=float, default=None,
                   help="fraction of free GPU memory for the KV cache (transformers: max_memory_percent, "
                        "vLLM: gpu_memory_utilization)")
    h = r.add_argument_group("HTTP target (instead of an on-device engine)")
    h.add_argument("--target", default=None, metavar="URL",
                   help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000 (vLLM, SGLang, TGI, "
                        "`servegen-fast serve`): replay over HTTP instead of on this machine's device")
    h.add_argument("--api", choices=("completions", "chat"), default="completions",
                   help="/v1/completions (default) or /v1/chat/completions, streamed")
    h.add_argument("--model-name", default=None, help="the request's model field (default: the server's first model)")
    h.add_argument("--server-type", choices=("vllm", "sglang", "tgi", "openai"), default="vllm",
                   help="vllm/sglang: token-id prompts on completions, min_tokens + ignore_eos; tgi/openai: text "
                        "prompts and max_tokens only (default: vllm)")
    h.add_argument("--prompt", choices=("auto", "tokens", "text"), default="auto",
                   help="token ids or synthetic text (default: token ids where the server takes them)")
    h.add_argument("--vocab-size", type=int, default=None,
                   help="draw token ids below this (default: the server's if it says, else 32000)")
    h.add_argument("--concurrency", type=int, default=1024, help="open connections / requests in flight at most")
    h.add_argument("--timeout", type=parse_seconds, default=600.0, help="per request, release to last byte (default 10m)")
    h.add_argument("--retries", type=int, default=0,
                   help="resend a request that failed before its first token (connect error, closed connection, "
                        "429, 5xx); default 0")
    h.add_argument("--workers", type=int, default=1,
                   help="sending processes, each with its own event loop (requests round-robin, whole sessions with "
                        "sessions; default 1)")
    h.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="send from --workers Ray actors on the cluster at ADDRESS (alone: RAY_ADDRESS, a local "
                        "`ray start`, else a new local one), each a share of the clients; --target may then list "
                        "several URLs, comma-separated (actor k sends to URL k mod count). docs/distributed.md")
    h.add_argument("--clock-tolerance", type=parse_seconds, default=0.005,
                   help="with --ray: refuse to start if a sender's clock is further than this from the driver's "
                        "(default 5ms)")
    h.add_argument("--api-key", default=None, help="bearer token (default: $OPENAI_API_KEY if set)")
    h.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="event loop of the sender (default: uvloop where installed, else asyncio)")
    s = r.add_argument_group("what to replay")
    s.add_argument("--time-scale", type=positive(), default=1.0,
                   help="multiply trace times by this (0.5: twice as fast; default 1)")
    s.add_argument("--start", type=parse_seconds, default=None, help="replay from this trace time (e.g. 600, 10m)")
    s.add_argument("--end", type=parse_seconds, default=None, help="replay up to this trace time")
    s.add_argument("--clients", type=_clients, default=None, help="only these client ids (comma-separated)")
    s.add_argument("--max-requests", type=int, default=None, help="at most this many requests")
    s.add_argument("--afap", "--as-fast-as-possible", dest="afap", action="store_true",
                   help="release every request at once (a throughput run) instead of at its trace time "
                        "(closed loop: a session's next turn at the previous one's completion, no think time)")
    add_release(s, "completion")
    m = r.add_argument_group("measurement")
    m.add_argument("--slo-ttft", type=parse_seconds, default=None, help="TTFT SLO for goodput (e.g. 500ms)")
    m.add_argument("--slo-tpot", type=parse_seconds, default=None, help="TPOT SLO for goodput (e.g. 50ms)")
    m.add_argument("--cache-block-size", type=positive(int), default=None,
                   help="KV block size of the expected prefix-cache hits (default: the engine's or server's, "
                        "else 16)")
    m.add_argument("--kv-cache-tokens", type=positive(int), default=None,
                   help="KV capacity (tokens) of the LRU that gives the expected prefix-cache hits (default: the "
                        "engine's or server's where it says, else unbounded)")
    m.add_argument("--plot", action="store_true", help="also write PNG plots (needs the plot extra)")
    m.add_argument("--json", action="store_true", help="print the summary as JSON")
    m.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    m.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    r.set_defaults(func=run)


def run(args) -> int:
    from ..io.atomic import check_output
    from ..replay.api import replay_trace

    check_output(args.output, "dir", "--output")

    if args.target is not None:
        return _cmd_replay_http(args)
    opts = {}
    if args.engine == "transformers":
        for key, value in (("attn_implementation", args.attn), ("page_size", args.page_size),
                           ("num_blocks", args.num_blocks), ("max_batch_tokens", args.max_batch_tokens),
                           ("max_memory_percent", args.gpu_memory), ("dtype", args.dtype)):
            if value is not None:
                opts[key] = value
    else:
        for key, value in (("gpu_memory_utilization", args.gpu_memory), ("dtype", args.dtype),
                           ("max_num_batched_tokens", args.max_batch_tokens)):
            if value is not None:
                opts[key] = value
    from ..replay.local.transformers import quiet_transformers

    quiet_transformers()
    summary = replay_trace(args.trace, args.output, engine=args.engine, model=args.model, device=args.device,
                           seed=args.seed, time_scale=args.time_scale, start=args.start, end=args.end,
                           clients=args.clients, max_requests=args.max_requests, afap=args.afap,
                           max_model_len=args.max_model_len, slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot,
                           plot=args.plot, engine_options=opts, log=_log(args), release=args.release,
                           cache_block_size=args.cache_block_size, kv_cache_tokens=args.kv_cache_tokens,
                           progress=not args.quiet and (sys.stderr.isatty() or args.progress))
    return _finish(args, summary)


def _log(args):
    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)
    return log


def _finish(args, summary) -> int:
    if args.json:
        print(json.dumps(summary, indent=1))
    elif not args.quiet:
        from ..replay.results import summary_text

        print(summary_text(summary), end="")
        print(f"results in {args.output}", file=sys.stderr)
    if not summary["complete"]:
        print("interrupted: results so far written, marked incomplete", file=sys.stderr)
        return 130
    return 0


def _cmd_replay_http(args) -> int:
    target, send = args.target, None
    if args.ray is not None:
        send, target = _ray_send(args)
    elif "," in args.target:
        raise SystemExit("error: several --target URLs need --ray (one sender actor per share of the clients)")
    try:
        summary = _replay_http(args, target, send)
    except OSError as e:  # with --ray: an unreachable cluster, a sender never ready
        if send is None:
            raise
        raise SystemExit(f"error: {e}") from None
    return _finish(args, summary)


def _replay_http(args, target, send):
    import os

    from ..replay.api import replay_http

    return replay_http(args.trace, args.output, target=target, api=args.api, model_name=args.model_name,
                       server_type=args.server_type, prompt=args.prompt, vocab=args.vocab_size,
                       concurrency=args.concurrency, timeout=args.timeout, retries=args.retries,
                       workers=args.workers, loop=args.loop, api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
                       seed=args.seed, time_scale=args.time_scale, start=args.start, end=args.end,
                       clients=args.clients, max_requests=args.max_requests, afap=args.afap,
                       max_model_len=args.max_model_len, slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot,
                       plot=args.plot, log=_log(args), send=send, release=args.release,
                       cache_block_size=args.cache_block_size, kv_cache_tokens=args.kv_cache_tokens,
                       progress=not args.quiet and (sys.stderr.isatty() or args.progress))


def _ray_send(args):
    from ..distributed import RaySend

    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    if not targets:
        raise SystemExit("error: --target: no URL given")
    return RaySend(args.ray or None, workers=args.workers, targets=targets, tolerance=args.clock_tolerance,
                   log=_log(args)), targets[0]
