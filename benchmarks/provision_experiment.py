"""The provisioning experiment of issue 18: instances needed for realistic vs naive load.

For each trace, `servegen-fast provision` finds the smallest N of simulated instances of the
built-in cpu-tiny profile (transformers continuous batching, tiny model, this CPU) whose SLO
attainment reaches the goodput target, for the trace itself and for its naive variants
(poisson: Poisson arrivals at the same per-window aggregate rate with lengths from the
aggregate distribution; shuffled: the trace's arrivals with lengths shuffled across clients),
and reports the under-provisioning (N_real - N_naive) / N_real.

    python benchmarks/provision_experiment.py --work /tmp/provision

Traces (generated here; rates scaled so that tens of cpu-tiny instances carry them):
  m-large   language/m-large, one whole day (its busiest of the pool's first), rates x --mlarge-scale
  azure     the Azure conversation log (1 h) fitted to a pool (`servegen-fast fit`), one hour
            generated from it with rates x --azure-scale (scaled up)
  chat      language/m-large, one hour from 13h with the built-in chat sessions (`--sessions chat`:
            multi-turn sessions, think times, shared prompt prefixes), rates x --chat-scale;
            simulated closed loop (a turn follows its previous turn's completion) behind the
            prefix-aware router with prefix reuse; its naive variants are open loop, least-loaded
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine, servegen_root  # noqa: E402

CLI = [sys.executable, "-m", "servegen_fast.cli"]


def sh(*args):
    subprocess.run([*CLI, *map(str, args)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--profile", default="cpu-tiny")
    ap.add_argument("--slo-ttft", default="2s")
    ap.add_argument("--slo-tpot", default="100ms")
    ap.add_argument("--goodput", default="0.99")
    ap.add_argument("--mlarge-day", default="0d", help="start of the m-large day in the pool (default: day 0)")
    ap.add_argument("--mlarge-scale", default="0.1")
    ap.add_argument("--azure-scale", default="4")
    ap.add_argument("--chat-scale", default="0.5")
    ap.add_argument("--only", default="m-large,azure,chat")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = servegen_root()
    reference = Path(os.environ.get("SERVEGEN_FAST_REFERENCE") or ROOT.parent / "shared" / "data")
    traces = {}
    if "m-large" in a.only:
        t = work / "m-large-day.parquet"
        if not t.is_file():
            sh("generate", "--data-dir", data, "--pool", "language/m-large", "--start", a.mlarge_day, "--duration", "1d",
               "--rate-scale", a.mlarge_scale, "--seed", 21, "-o", t, "-q")
        traces["m-large"] = t
    if "azure" in a.only:
        pool, t = work / "azure-pool.parquet", work / "azure-1h.parquet"
        if not pool.is_file():
            sh("fit", reference / "azure-llm-2023-conv.csv", "-o", pool, "-q")
        if not t.is_file():
            sh("generate", "--pool", pool, "--rate-scale", a.azure_scale, "--seed", 22, "-o", t, "-q")
        traces["azure"] = t
    if "chat" in a.only:
        t = work / "chat-1h.parquet"
        if not t.is_file():
            sh("generate", "--data-dir", data, "--pool", "language/m-large", "--start", "13h", "--duration", "1h",
               "--rate-scale", a.chat_scale, "--sessions", "chat", "--seed", 23, "-o", t, "-q")
        traces["chat"] = t
    print(f"machine: {machine()}; profile {a.profile}; SLO TTFT <= {a.slo_ttft}, TPOT <= {a.slo_tpot}, "
          f"goodput {a.goodput}; router least-loaded (chat: prefix-aware, closed loop)")
    for name, t in traces.items():
        out = work / f"provision-{name}"
        t0 = time.perf_counter()
        router = ["--router", "prefix-aware"] if name == "chat" else []
        sh("provision", t, "--profile", a.profile, "--slo-ttft", a.slo_ttft, "--slo-tpot", a.slo_tpot, "--goodput",
           a.goodput, *router, "-o", out, "--plot", "-q")
        took = time.perf_counter() - t0
        r = json.loads((out / "provision.json").read_text())
        v = r["variants"]
        print(f"{name}: {v['realistic']['requests']:,} requests, searched in {took:.0f} s")
        for k, x in v.items():
            u = x.get("under_provisioning")
            print(f"  {k:10s} N = {x['instances']:4d}" + ("" if u is None else f"   under-provisioning {u:+.1%}"))


if __name__ == "__main__":
    main()
