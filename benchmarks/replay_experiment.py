"""Replay the same time slice of a pool three ways and compare p99 TTFT and goodput.

1. ``servegen``: the pool's arrivals (ServeGen's per-client bursty processes) and lengths;
2. ``poisson``: Poisson arrivals at the same per-client, per-window rates, same length laws;
3. ``shuffled``: the servegen arrivals with the (input, output) length pairs shuffled across
   requests (and so across clients and time): same marginals, no client/length structure.

Each trace is replayed on a freshly started engine (same model, seed and settings), at its
trace times. The rates are the pool's own, scaled so the slice's mean is --rate req/s.

GPU (the experiment of the issue; ~1B model, 10 minutes of trace time per case):
    python benchmarks/replay_experiment.py --model 1b --device cuda --duration 600 --rate 20
CPU check (tiny random model, 60 s slice at 1.5 req/s, lengths fitted to 1024 tokens):
    python benchmarks/replay_experiment.py --dry-run

Sessions (issue 14): a multi-turn trace of the pool with SESSION_PROFILE (short think times,
block size 16) replayed closed-loop on-device and over HTTP to `servegen-fast serve` (same
model): every turn, session metrics, expected vs reported prefix-cache hit ratio.
    python benchmarks/replay_experiment.py --sessions --dry-run     # ~200 sessions, tiny model, CPU
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402

from servegen_fast.model import rates  # noqa: E402
from servegen_fast.sample.generate import generate_table  # noqa: E402
from servegen_fast.io.pool_file import open_pool  # noqa: E402
from servegen_fast.replay import replay_trace  # noqa: E402

CASES = ("servegen", "poisson", "shuffled")
SESSION_PROFILE = {
    "format": "servegen-fast-sessions", "version": 1, "source": "benchmarks/replay_experiment.py --sessions",
    "default": {"session_share": 0.8, "turns": {"values": [2, 3, 4, 6], "probs": [0.4, 0.3, 0.2, 0.1]},
                "think_time": {"values": [0.5, 1.0, 2.0, 4.0], "probs": [0.25, 0.25, 0.25, 0.25]},
                "new_tokens": {"values": [16, 32, 64, 128], "probs": [0.25, 0.25, 0.25, 0.25]},
                "prefix_share": 0.5, "prefixes": {"tokens": [256, 128], "weights": [0.7, 0.3]},
                "service": {"ttft": 0.05, "tpot": 0.01}, "max_span": 60}}


def traces(pool, start: int, duration: int, rate: float, seed: int) -> dict[str, pa.Table]:
    view = pool.span(start, start + duration)
    native = float((view.aggregate_rate() * view.window_len).sum() / view.window_len.sum())
    rate_fn = rates.Scaled(rate / native)
    out = {m: generate_table(pool, rate=rate_fn, duration=duration, start=start, seed=seed, mode=m)
           for m in ("servegen", "poisson")}
    sg = out["servegen"]
    perm = np.random.default_rng(seed).permutation(sg.num_rows)
    cols = {n: sg.column(n) for n in sg.column_names}
    cols["input_tokens"] = sg.column("input_tokens").take(pa.array(perm))
    cols["output_tokens"] = sg.column("output_tokens").take(pa.array(perm))
    out["shuffled"] = pa.table(cols, schema=sg.schema)
    return out


def row(name: str, table: pa.Table, s: dict) -> dict:
    lat, c = s["latency"], s["counts"]
    return {"case": name, "requests": c["selected"], "completed": c["completed"],
            "offered_rate": table.num_rows / max(float(table.column("timestamp").to_numpy().max()), 1e-9),
            "ttft_p50_ms": lat["ttft"].get("p50", np.nan) * 1e3, "ttft_p99_ms": lat["ttft"].get("p99", np.nan) * 1e3,
            "tpot_p99_ms": lat["tpot"].get("p99", np.nan) * 1e3, "e2e_p99_s": lat["e2e"].get("p99", np.nan),
            "goodput_rps": s["goodput"]["requests_per_s"], "goodput_fraction": s["goodput"]["fraction"],
            "throughput_tok_s": s["throughput"]["output_tokens_per_s"],
            "lateness_p99_ms": s["lateness"]["p99"] * 1e3, "lateness_max_ms": s["lateness"]["max"] * 1e3,
            "kv_used_max": s.get("engine_stats", {}).get("kv_used_fraction_max"), "complete": s["complete"]}


def table_md(rows: list[dict]) -> str:
    head = ("| case | requests | offered req/s | TTFT p50 ms | TTFT p99 ms | TPOT p99 ms | goodput req/s "
            "| goodput % | release lateness p99 / max ms | peak KV use |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        kv = "-" if r["kv_used_max"] is None else f"{r['kv_used_max']:.0%}"
        lines.append(f"| {r['case']} | {r['requests']} | {r['offered_rate']:.2f} | {r['ttft_p50_ms']:.0f} "
                     f"| {r['ttft_p99_ms']:.0f} | {r['tpot_p99_ms']:.1f} | {r['goodput_rps']:.2f} "
                     f"| {r['goodput_fraction']:.0%} | {r['lateness_p99_ms']:.3f} / {r['lateness_max_ms']:.3f} | {kv} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="builtin")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--start", type=int, default=36000, help="slice start in the pool (s; default 10 h)")
    ap.add_argument("--duration", type=int, default=600, help="slice length (s; default 600)")
    ap.add_argument("--rate", type=float, default=20.0, help="mean aggregate rate of the slice (req/s)")
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--model", default="1b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--slo-ttft", type=float, default=0.5, help="TTFT SLO (s; default 0.5)")
    ap.add_argument("--slo-tpot", type=float, default=0.05, help="TPOT SLO (s; default 0.05)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--output", default="replay-experiment")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU check: tiny model, 60 s slice at 1.5 req/s, lengths fitted to 1024 tokens, "
                         "SLOs TTFT 250 ms / TPOT 25 ms")
    ap.add_argument("--sessions", action="store_true", help="the multi-turn closed-loop check (module doc)")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="--sessions: replay times (and think times) multiplied by this (default 1)")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.model, args.device, args.duration, args.rate = "tiny", "cpu", 60, (8.0 if args.sessions else 1.5)
        args.max_model_len, args.slo_ttft, args.slo_tpot = 1024, 0.25, 0.025
    if args.sessions:
        return sessions_check(args)
    pool = open_pool(args.pool, args.data_dir)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    tables = traces(pool, args.start, args.duration, args.rate, args.seed)
    rows = []
    for name in args.cases.split(","):
        t0 = time.perf_counter()
        print(f"[{name}] {tables[name].num_rows} requests over {args.duration} s ...", file=sys.stderr, flush=True)
        s = replay_trace(tables[name], out / name, engine=args.engine, model=args.model, device=args.device,
                         seed=args.seed, max_model_len=args.max_model_len, slo_ttft=args.slo_ttft,
                         slo_tpot=args.slo_tpot, progress=sys.stderr.isatty())
        rows.append(row(name, tables[name], s))
        print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        engine = s["engine"]
    text = (f"pool {args.pool}, slice [{args.start}, {args.start + args.duration}) s at {args.rate} req/s mean, "
            f"seed {args.seed}; engine {engine['name']} ({engine['path']}), model {engine['model']}, "
            f"{engine['device']} {engine['dtype']}; SLO TTFT {args.slo_ttft * 1e3:g} ms, TPOT "
            f"{args.slo_tpot * 1e3:g} ms\nmachine: {machine()}\n\n" + table_md(rows) + "\n")
    (out / "experiment.md").write_text(text)
    (out / "experiment.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    print(text)
    return 0


def session_row(name: str, s: dict) -> dict:
    ss, lat, pc = s["sessions"], s["latency"], s["prefix_cache"]
    ratio = (lambda d: None if not d else d["hit_ratio"])
    return {"case": name, "requests": s["counts"]["selected"], "completed": s["counts"]["completed"],
            "sessions": ss["sessions"], "multi_turn": ss["multi_turn"], "sessions_completed": ss["completed"],
            "unfinished": ss["unfinished"], "ttft_p50_ms": lat["ttft"].get("p50", np.nan) * 1e3,
            "ttft_p99_ms": lat["ttft"].get("p99", np.nan) * 1e3, "ttlt_p50_s": ss["ttlt"].get("p50", np.nan),
            "ttlt_p99_s": ss["ttlt"].get("p99", np.nan), "goodput_requests": s["goodput"]["fraction"],
            "goodput_sessions": ss["goodput"]["fraction"], "lateness_p99_ms": s["lateness"]["p99"] * 1e3,
            "lateness_max_ms": s["lateness"]["max"] * 1e3, "hit_expected": ratio(pc["expected"]),
            "hit_reported": ratio(pc["reported"]), "complete": s["complete"]}


def session_md(rows: list[dict]) -> str:
    head = ("| replay | requests (completed) | sessions (multi-turn) | sessions completed / unfinished | TTFT p50 / p99 ms "
            "| session time to last token p50 / p99 s | goodput requests / sessions | lateness p99 / max ms "
            "| prefix hit ratio expected / reported |")
    f = (lambda x: "-" if x is None else f"{x:.3f}")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['case']} | {r['requests']} ({r['completed']}) | {r['sessions']} ({r['multi_turn']}) "
                     f"| {r['sessions_completed']} / {r['unfinished']} | {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} "
                     f"| {r['ttlt_p50_s']:.2f} / {r['ttlt_p99_s']:.2f} | {r['goodput_requests']:.0%} / "
                     f"{r['goodput_sessions']:.0%} | {r['lateness_p99_ms']:.3f} / {r['lateness_max_ms']:.3f} "
                     f"| {f(r['hit_expected'])} / {f(r['hit_reported'])} |")
    return "\n".join(lines)


def sessions_check(args) -> int:
    """The multi-turn trace replayed closed-loop on-device, then over HTTP to `serve` (same model)."""
    import subprocess

    from servegen_fast import cli
    from servegen_fast.replay.api import replay_http

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(SESSION_PROFILE))
    trace = out / "sessions.parquet"
    rc = cli.main(["generate", "--pool", args.pool, "--sessions", str(out / "profile.json"), "--block-size", "16",
                   "--start", str(args.start), "--duration", str(args.duration), "--rate", str(args.rate),
                   "--seed", str(args.seed), "-o", str(trace), "--quiet"]
                  + (["--data-dir", args.data_dir] if args.data_dir else []))
    if rc:
        return rc
    common = dict(seed=args.seed, max_model_len=args.max_model_len, slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot,
                  time_scale=args.time_scale)
    rows, t0 = [], time.perf_counter()
    s = replay_trace(trace, out / "on-device", engine=args.engine, model=args.model, device=args.device, **common)
    rows.append(session_row("on-device", s))
    print(f"[on-device] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "servegen_fast.cli", "serve", "--model", args.model, "--device",
                             args.device, "--port", "0", "--seed", str(args.seed)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        url = next((line.split()[-1] for line in proc.stderr if line.startswith("listening on ")), None)
        if url is None:
            raise RuntimeError("servegen-fast serve did not start")
        t0 = time.perf_counter()
        s = replay_http(trace, out / "http", target=url, timeout=300.0, **common)
        rows.append(session_row("HTTP (serve)", s))
        print(f"[http] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = (f"pool {args.pool}, [{args.start}, {args.start + args.duration}) s at {args.rate} req/s, seed "
            f"{args.seed}, sessions {SESSION_PROFILE['source']} (block size 16), closed loop, time scale "
            f"{args.time_scale:g}; model {args.model} on "
            f"{args.device}, max model len {args.max_model_len}; SLO TTFT {args.slo_ttft * 1e3:g} ms, TPOT "
            f"{args.slo_tpot * 1e3:g} ms\nmachine: {machine()}\n\n" + session_md(rows) + "\n")
    (out / "sessions.md").write_text(text)
    (out / "sessions.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
