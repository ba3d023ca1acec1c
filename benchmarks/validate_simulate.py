"""Check the simulator against on-device replay: the same held-out traces replayed on the
real engine (transformers continuous batching, tiny model, CPU) and simulated on one instance
of an engine profile; p50 / p99 TTFT, TPOT and throughput side by side.

    python benchmarks/validate_simulate.py --work /tmp/validate            # calibrate, replay, simulate
    python benchmarks/validate_simulate.py --work /tmp/validate --profile cpu-tiny --reuse
    python benchmarks/validate_simulate.py --work /tmp/validate2 --calibrate-each   # a profile per trace

The traces (generated here, 120 s each; none of them is in the calibration sweep):
  v1  language/m-large from 13h, aggregate 1 req/s, seed 11
  v2  language/m-small from 9h, aggregate 3 req/s, seed 12
  v3  multimodal/mm-image from 15h, aggregate 1 req/s, seed 13
Bounds (issue 18): TTFT p50 and p99 within 20%, throughput within 10%.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine, servegen_root  # noqa: E402

TRACES = {"v1": ("language/m-large", "13h", 1, 11), "v2": ("language/m-small", "9h", 3, 12),
          "v3": ("multimodal/mm-image", "15h", 1, 13)}
CLI = [sys.executable, "-m", "servegen_fast.cli"]


def sh(args):
    subprocess.run([*CLI, *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="folder for traces, replays, simulations")
    ap.add_argument("--profile", default=None, help="use this profile instead of calibrating one here")
    ap.add_argument("--reuse", action="store_true", help="keep traces and replays already in --work")
    ap.add_argument("--duration", default="120")
    ap.add_argument("--calibrate-each", action="store_true",
                    help="measure a profile right before each replay (this shared host's speed drifts by tens of "
                         "percent within minutes) and simulate each trace on its own")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = servegen_root()
    profile = a.profile
    if profile is None and not a.calibrate_each:
        profile = str(work / "profile.json")
        if not (a.reuse and Path(profile).is_file()):
            sh(["profile", "-o", profile, "--passes", str(work / "passes.csv"), "-q"])
    rows = []
    for name, (pool, start, rate, seed) in TRACES.items():
        trace = work / f"{name}.parquet"
        if not (a.reuse and trace.is_file()):
            sh(["generate", "--data-dir", str(data), "--pool", pool, "--start", start, "--duration", a.duration,
                "--rate", str(rate), "--seed", str(seed), "-o", str(trace), "-q"])
        if a.calibrate_each:
            profile = str(work / f"profile_{name}.json")
            if not (a.reuse and Path(profile).is_file()):
                sh(["profile", "-o", profile, "--passes", str(work / f"passes_{name}.csv"), "-q"])
        rep = work / f"replay_{name}"
        if not (a.reuse and (rep / "summary.json").is_file()):
            sh(["replay", str(trace), "--device", "cpu", "--model", "tiny", "-o", str(rep), "-q"])
        sim = work / f"sim_{name}"
        sh(["simulate", str(trace), "--profile", profile, "-n", "1", "-o", str(sim), "-q"])
        r, s = (json.loads((d / "summary.json").read_text()) for d in (rep, sim))
        rows.append((name, pool, rate, r, s))
    print(f"machine: {machine()}; profile: {profile}")
    head = f"{'trace':5s} {'pool':20s} {'req/s':>5s} {'n':>4s} | {'what':10s} {'replay':>9s} {'simulated':>9s} {'error':>7s}"
    print(head)
    for name, pool, rate, r, s in rows:
        for label, get in (("TTFT p50", lambda x: x["latency"]["ttft"]["p50"]),
                           ("TTFT p99", lambda x: x["latency"]["ttft"]["p99"]),
                           ("TPOT p50", lambda x: x["latency"]["tpot"]["p50"]),
                           ("tok/s", lambda x: x["throughput"]["output_tokens_per_s"]),
                           ("req/s", lambda x: x["throughput"]["requests_per_s"])):
            rv, sv = get(r), get(s)
            unit = 1e3 if label.startswith(("TTFT", "TPOT")) else 1.0
            print(f"{name:5s} {pool:20s} {rate:5g} {r['counts']['completed']:4d} | {label:10s} {rv * unit:9.2f} "
                  f"{sv * unit:9.2f} {sv / rv - 1:+7.1%}")


if __name__ == "__main__":
    main()
