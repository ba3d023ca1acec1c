"""`servegen-fast serve`: a (random) model behind a minimal OpenAI-compatible streaming API."""
from __future__ import annotations


def add_arguments(sub) -> None:
    s = sub.add_parser("serve", help="serve a (random) model over a minimal OpenAI-compatible streaming API",
                       description="A minimal OpenAI-compatible server (/v1/completions, /v1/chat/completions, "
                                   "streaming) over the on-device engine, for testing HTTP replay on loopback. "
                                   "See docs/replay.md.")
    s.add_argument("--model", default="tiny", help="tiny, 1b, 8b (random Llama-style) or a checkpoint directory")
    s.add_argument("--served-model-name", default=None, help="the model name clients send (default: --model)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--num-blocks", type=int, default=None, help="KV-cache blocks")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..replay.http.server import serve


    opts = {k: v for k, v in (("dtype", args.dtype), ("num_blocks", args.num_blocks)) if v is not None}
    serve(args.model, host=args.host, port=args.port, device=args.device, seed=args.seed,
          served_name=args.served_model_name, **opts)
    return 0
