"""Check the simulator against on-device replay: the same held-out traces replayed on the
real engine (transformers continuous batching, tiny model, CPU) and simulated on one instance
of an engine profile; p50 / p99 TTFT, TPOT and throughput side by side.

    python benchmarks/validate_simulate.py --work /tmp/validate            # calibrate, replay, simulate
    python benchmarks/validate_simulate.py --work /tmp/validate --profile cpu-tiny --reuse
    python benchmarks/validate_simulate.py --work /tmp/validate2 --calibrate-each   # a profile per trace
    python benchmarks/validate_simulate.py --work /tmp/validate3 --bracket --rounds 3 --duration 300 --seeds 8

The traces (generated here, 120 s each by default; none of them is in the calibration sweep):
  v1  language/m-large from 13h, aggregate 1 req/s, seed 11
  v2  language/m-small from 9h, aggregate 3 req/s, seed 12
  v3  multimodal/mm-image from 15h, aggregate 1 req/s, seed 13
Bounds (issue 18): TTFT p50 and p99 within 20%, throughput within 10%.

This shared host's speed drifts by tens of percent within minutes, so one replay of a trace is
itself a noisy measurement. --calibrate-each measures a profile right before each replay;
--bracket measures one before and one after each replay (a sweep after one trace is the sweep
before the next) and simulates on their average; --rounds K repeats everything K times on the
same traces and reports how often each bound held and how far the replays of one trace
moved between rounds. --seeds K simulates each trace with K seeds of the draws from the
profile's pass-time spread and compares their mean (a tail percentile over a few dozen similar
requests is itself a sample of that spread).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine, servegen_root  # noqa: E402

from servegen_fast.simulate.profile import load_profile, save_profile  # noqa: E402

TRACES = {"v1": ("language/m-large", "13h", 1, 11), "v2": ("language/m-small", "9h", 3, 12),
          "v3": ("multimodal/mm-image", "15h", 1, 13)}
CLI = [sys.executable, "-m", "servegen_fast.cli"]
FIGURES = (("TTFT p50", lambda x: x["latency"]["ttft"]["p50"], 0.20),
           ("TTFT p99", lambda x: x["latency"]["ttft"]["p99"], 0.20),
           ("TPOT p50", lambda x: x["latency"]["tpot"]["p50"], None),
           ("tok/s", lambda x: x["throughput"]["output_tokens_per_s"], 0.10),
           ("req/s", lambda x: x["throughput"]["requests_per_s"], 0.10))


def sh(args):
    subprocess.run([*CLI, *args], check=True)


def measure_profile(path: Path, reuse: bool) -> Path:
    if not (reuse and path.is_file()):
        sh(["profile", "-o", str(path), "--passes", str(path.with_suffix(".csv")), "-q"])
    return path


def averaged_profile(a: Path, b: Path, out: Path) -> Path:
    """The mean of two profiles of one engine: the step-time model is linear in its coefficients,
    so this predicts each pass at the mean of the two measured speeds."""
    pa, pb = load_profile(a), load_profile(b)
    coef = {k: (v + pb.coefficients[k]) / 2 for k, v in pa.coefficients.items()}
    spread = [(x + y) / 2 for x, y in zip(pa.spread, pb.spread)] if len(pa.spread) == len(pb.spread) else []
    return save_profile(replace(pa, coefficients=coef, idle_wake=(pa.idle_wake + pb.idle_wake) / 2, spread=spread,
                                fit={"averaged": [str(a), str(b)]}), out)


def mean_summary(sums: list) -> dict:
    """The figures of several simulations of one trace (seeds of the pass-time draws), averaged."""
    if len(sums) == 1:
        return sums[0]

    def mean(get):
        return sum(get(x) for x in sums) / len(sums)

    return {"latency": {k: {q: mean(lambda x: x["latency"][k][q]) for q in ("p50", "p99")} for k in ("ttft", "tpot")},
            "throughput": {k: mean(lambda x: x["throughput"][k]) for k in ("output_tokens_per_s", "requests_per_s")},
            "counts": sums[0]["counts"]}


def one_round(work: Path, traces: Path, a, data: Path) -> list:
    profile = a.profile
    if profile is None and not (a.calibrate_each or a.bracket):
        profile = str(measure_profile(work / "profile.json", a.reuse))
    before = measure_profile(work / "profile_0.json", a.reuse) if a.bracket else None
    rows = []
    for i, (name, (pool, start, rate, seed)) in enumerate(TRACES.items(), 1):
        trace = traces / f"{name}.parquet"  # made once: every round replays the same traces
        if not ((a.reuse or work != traces) and trace.is_file()):
            sh(["generate", "--data-dir", str(data), "--pool", pool, "--start", start, "--duration", a.duration,
                "--rate", str(rate), "--seed", str(seed), "-o", str(trace), "-q"])
        if a.calibrate_each:
            profile = str(measure_profile(work / f"profile_{name}.json", a.reuse))
        rep = work / f"replay_{name}"
        if not (a.reuse and (rep / "summary.json").is_file()):
            sh(["replay", str(trace), "--device", "cpu", "--model", "tiny", "-o", str(rep), "-q"])
        if a.bracket:
            after = measure_profile(work / f"profile_{i}.json", a.reuse)
            profile = str(averaged_profile(before, after, work / f"profile_{name}_bracket.json"))
            before = after
        sims = []
        for seed in range(a.seeds):  # the profile's pass-time spread drawn with each seed
            sim = work / (f"sim_{name}" if seed == 0 else f"sim_{name}_seed{seed}")
            sh(["simulate", str(trace), "--profile", profile, "-n", "1", "-o", str(sim), "-q", "--seed", str(seed)])
            sims.append(json.loads((sim / "summary.json").read_text()))
        r = json.loads((rep / "summary.json").read_text())
        rows.append((name, pool, rate, r, mean_summary(sims)))
        if a.seeds > 1:
            p99 = [x["latency"]["ttft"]["p99"] * 1e3 for x in sims]
            print(f"{name}: simulated TTFT p99 over {a.seeds} seeds {min(p99):.2f}-{max(p99):.2f} ms", flush=True)
    print(f"machine: {machine()}; profile: {profile}", flush=True)
    print(f"{'trace':5s} {'pool':20s} {'req/s':>5s} {'n':>4s} | {'what':10s} {'replay':>9s} {'simulated':>9s} "
          f"{'error':>7s}")
    for name, pool, rate, r, s in rows:
        for label, get, bound in FIGURES:
            rv, sv = get(r), get(s)
            unit = 1e3 if label.startswith(("TTFT", "TPOT")) else 1.0
            flag = "" if bound is None else ("  ok" if abs(sv / rv - 1) <= bound else "  MISS")
            print(f"{name:5s} {pool:20s} {rate:5g} {r['counts']['completed']:4d} | {label:10s} {rv * unit:9.2f} "
                  f"{sv * unit:9.2f} {sv / rv - 1:+7.1%}{flag}", flush=True)
    return rows


def report_rounds(rounds: list) -> None:
    """How often each bound held, and the replays' own spread between rounds."""
    print(f"\nover {len(rounds)} rounds:")
    for label, get, bound in FIGURES:
        if bound is None:
            continue
        held = sum(abs(get(s) / get(r) - 1) <= bound for rows in rounds for *_, r, s in rows)
        print(f"  {label:9s} within {bound:.0%}: {held} of {sum(len(rows) for rows in rounds)}")
    for k, name in enumerate(TRACES):
        for label, get, _ in FIGURES[:3]:
            reps = [get(rows[k][3]) * 1e3 for rows in rounds]
            sims = [get(rows[k][4]) * 1e3 for rows in rounds]
            print(f"  {name} {label}: replays {min(reps):.2f}-{max(reps):.2f} ms "
                  f"(max/min {max(reps) / min(reps):.2f}), simulated {min(sims):.2f}-{max(sims):.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="folder for traces, replays, simulations")
    ap.add_argument("--profile", default=None, help="use this profile instead of calibrating one here")
    ap.add_argument("--reuse", action="store_true", help="keep traces, profiles and replays already in --work")
    ap.add_argument("--duration", default="120")
    ap.add_argument("--calibrate-each", action="store_true", help="measure a profile right before each replay")
    ap.add_argument("--bracket", action="store_true",
                    help="measure a profile before and after each replay and simulate on their average")
    ap.add_argument("--rounds", type=int, default=1, help="repeat calibration and replays K times (round_K folders)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="simulate each trace with seeds 0..K-1 of the pass-time draws and compare their mean")
    a = ap.parse_args()
    if a.profile and (a.calibrate_each or a.bracket):
        ap.error("--profile takes no --calibrate-each or --bracket (they measure profiles here)")
    if a.calibrate_each and a.bracket:
        ap.error("choose one of --calibrate-each and --bracket")
    if a.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {a.rounds}")
    if a.seeds < 1:
        ap.error(f"--seeds must be at least 1, got {a.seeds}")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = servegen_root()
    if a.rounds == 1:
        one_round(work, work, a, data)
        return
    rounds = []
    for k in range(a.rounds):
        print(f"\nround {k + 1} of {a.rounds}", flush=True)
        d = work / f"round_{k + 1}"
        d.mkdir(exist_ok=True)
        rounds.append(one_round(d, work, a, data))
    report_rounds(rounds)


if __name__ == "__main__":
    main()
