"""Provisioning: the smallest number of instances meeting an SLO, for a trace and for naive
versions of it that the tool makes itself, and how far the naive answer under-provisions.

Naive variants (both keyed by (seed, stream, window): any run gives the same tables):
- `poisson`: Poisson arrivals at the trace's own aggregate rate in each window (a window of
  `window` s holding n requests gets Poisson(n) arrivals, uniform in it), lengths drawn as
  (input, output) pairs from the whole trace's aggregate distribution. The classic benchmark.
- `shuffled`: the trace's arrival times kept, each request's (input, output) pair taken from
  a random permutation of the trace's requests: the client structure (who sends which lengths,
  when) removed, the arrival process kept.

SLO attainment at N = the fraction of the trace's requests that complete with TTFT <= the TTFT
SLO and TPOT <= the TPOT SLO (`replay.results.summarize`'s goodput fraction). The search
doubles N until the target is met, then bisects; attainment is not guaranteed monotone in N
under every router, so the answer is the smallest N found meeting it, and the curve keeps
every N evaluated. Under-provisioning = (N_realistic - N_naive) / N_realistic.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..io.atomic import write_text
from ..replay.plan import ReplayPlan, make_plan
from .cluster import KEY_COLUMNS, check_options, prefix_keys, prompt_blocks, run_plan
from .kernel import COMPLETED
from .profile import Profile, load_profile

VARIANTS = ("realistic", "poisson", "shuffled")
STREAM_COUNT, STREAM_TIMES, STREAM_LENGTHS, STREAM_SHUFFLE = 1, 2, 3, 4


def _rng(seed: int, stream: int, window: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=np.array([seed, (stream << 40) | window], dtype=np.uint64)))


def naive_poisson(table: pa.Table, *, window: float = 600.0, seed: int = 0) -> pa.Table:
    """Poisson arrivals at the per-window aggregate rate; lengths from the aggregate distribution."""
    ts = table.column("timestamp").to_numpy()
    inp = table.column("input_tokens").to_numpy()
    out = table.column("output_tokens").to_numpy()
    if not window > 0:
        raise ValueError(f"window must be positive, got {window}")
    if len(ts) == 0:
        raise ValueError("cannot make a naive version of an empty trace")
    t0, t1 = float(ts.min()), float(ts.max())
    n_win = max(1, int(np.ceil((t1 - t0) / window)) if t1 > t0 else 1)
    edges = t0 + window * np.arange(n_win + 1)
    edges[-1] = max(edges[-1], t1)
    counts = np.bincount(np.minimum(((ts - t0) // window).astype(np.int64), n_win - 1), minlength=n_win)
    times = []
    for w in range(n_win):
        k = _rng(seed, STREAM_COUNT, w).poisson(counts[w]) if counts[w] else 0
        if k:
            lo, hi = edges[w], edges[w + 1]
            times.append(np.sort(lo + (hi - lo) * _rng(seed, STREAM_TIMES, w).random(k)))
    t = np.concatenate(times) if times else np.zeros(0)
    pick = _rng(seed, STREAM_LENGTHS).integers(0, len(ts), len(t))
    return _table(t, inp[pick], out[pick])


def naive_shuffled(table: pa.Table, *, seed: int = 0) -> pa.Table:
    """The trace's arrivals with lengths permuted across its requests (client structure removed)."""
    ts = table.column("timestamp").to_numpy()
    perm = _rng(seed, STREAM_SHUFFLE).permutation(len(ts))
    return _table(ts, table.column("input_tokens").to_numpy()[perm], table.column("output_tokens").to_numpy()[perm])


def _table(t, inp, out) -> pa.Table:
    n = len(t)
    return pa.table({"timestamp": pa.array(np.asarray(t, np.float64)), "client_id": pa.array(np.zeros(n, np.uint32)),
                     "input_tokens": pa.array(np.asarray(inp, np.uint32)),
                     "output_tokens": pa.array(np.asarray(out, np.uint32))})


def attainment(plan: ReplayPlan, profile: Profile, instances: int, router: str, slo_ttft: float | None,
               slo_tpot: float | None, keys: np.ndarray | None = None, blocks: tuple | None = None,
               seed: int = 0) -> float:
    """Fraction of the plan's requests meeting both SLOs on `instances` simulated engines
    (`keys`, `blocks`: prefix-aware routing keys and prompt block ids, as `run_plan` takes)."""
    res = run_plan(plan, profile, instances, router, keys, blocks, seed=seed)
    return float(_meets(res.status == COMPLETED, res.first_token - res.released, _tpot(res),
                        slo_ttft, slo_tpot).mean())


def _tpot(res) -> np.ndarray:
    g = res.generated.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(g > 1, (res.completed - res.first_token) / (g - 1), np.nan)


def _meets(ok, ttft, tpot, slo_ttft, slo_tpot) -> np.ndarray:
    ok = ok.copy()
    if slo_ttft is not None:
        ok &= ttft <= slo_ttft
    if slo_tpot is not None:
        ok &= ~(tpot > slo_tpot)  # one-token outputs have no TPOT and pass (as in replay's summary)
    return ok


def check_slo(plan: ReplayPlan, profile: Profile, slo_ttft, slo_tpot, goodput: float, name: str) -> float:
    """The attainment bound with every request alone on an idle instance; an error if below the target."""
    for label, v in (("TTFT", slo_ttft), ("TPOT", slo_tpot)):
        if v is not None and not (np.isfinite(v) and v > 0):
            raise ValueError(f"the {label} SLO must be a positive time, got {v!r}")
    if slo_ttft is None and slo_tpot is None:
        raise ValueError("give at least one SLO (TTFT or TPOT)")
    if not 0 < goodput <= 1:
        raise ValueError(f"goodput target must be in (0, 1], got {goodput!r}")
    ttft, tpot, _ = profile.isolated(plan.input_tokens, plan.output_tokens)
    fits = np.ceil((plan.input_tokens.astype(np.int64) + plan.output_tokens) / profile.page_size) <= profile.kv_blocks
    bound = float(_meets(fits, ttft, tpot, slo_ttft, slo_tpot).mean())
    if bound < goodput:
        slo = ", ".join(f"{k} <= {v * 1e3:g} ms" for k, v in (("TTFT", slo_ttft), ("TPOT", slo_tpot)) if v is not None)
        raise ValueError(f"impossible SLO for the {name} trace: even alone on an idle instance only {bound:.2%} of its "
                         f"requests meet {slo} with this profile, below the goodput target {goodput:.2%}: "
                         "relax the SLO or the target")
    return bound


def smallest_n(plan, profile, router, slo_ttft, slo_tpot, goodput, max_instances, name="realistic", keys=None,
               blocks=None, seed=0):
    """(smallest N meeting the target, {N: attainment evaluated})."""
    curve: dict[int, float] = {}

    def at(n):
        if n not in curve:
            curve[n] = attainment(plan, profile, n, router, slo_ttft, slo_tpot, keys, blocks, seed)
        return curve[n]

    lo, hi = 0, 1
    while at(hi) < goodput:
        if hi >= max_instances:
            raise ValueError(f"the {name} trace does not meet the SLO with {max_instances} instances (attainment "
                             f"{curve[hi]:.2%} < {goodput:.2%}): raise --max-instances or relax the SLO")
        lo, hi = hi, min(2 * hi, max_instances)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid) >= goodput:
            hi = mid
        else:
            lo = mid
    return min(n for n, a in curve.items() if a >= goodput), curve


def provision(trace, *, profile, slo_ttft=None, slo_tpot=None, goodput: float = 0.99, router: str = "least-loaded",
              window: float = 600.0, seed: int = 0, max_instances: int = 4096, time_scale: float = 1.0,
              start=None, end=None, variants=VARIANTS, release: str = "auto", output=None, plot: bool = False,
              spread: bool = True, log=None) -> dict:
    """N for the trace and its naive variants, the under-provisioning, the attainment curves.
    `release`: the realistic trace's (as simulate's: auto is closed loop where it has sessions);
    the naive variants have no sessions and are open loop. `seed`: of the naive variants and of the
    draws from the profile's pass-time spread. Router prefix-aware: the realistic
    trace's keys (KEY_COLUMNS); the naive variants have none and are routed least-loaded. `spread`
    False: every pass at the profile's fitted time."""
    from ..io.trace import read_trace

    log = log or (lambda m: None)
    prof = load_profile(profile)
    if not spread:
        prof = prof.without_spread()
    check_options(prof, 1, router)
    prof.coef_array(seed)  # a bad seed fails here, before any work
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "realistic" not in variants:
        raise ValueError(f"variants must include realistic and come from {', '.join(VARIANTS)}; got {list(variants)}")
    table, source = (trace, "<table>") if isinstance(trace, pa.Table) else (read_trace(trace), str(trace))
    limit = int(prof.measured_on.get("max_model_len") or 0) or None
    base = make_plan(table, start=start, end=end, time_scale=time_scale, max_model_len=limit, source=source,
                     release=release)
    sel = table.take(pa.array(base.row))
    if router == "prefix-aware" and prefix_keys(sel) is None:
        raise ValueError(f"{source}: router prefix-aware needs a prefix key per request (a trace column "
                         f"{' or '.join(KEY_COLUMNS)}); use round-robin or least-loaded")
    tables = {"realistic": sel, "poisson": lambda: naive_poisson(sel, window=window, seed=seed),
              "shuffled": lambda: naive_shuffled(sel, seed=seed)}
    plans, bounds, keys, blocks = {}, {}, {}, {}
    for v in variants:
        t = tables[v] if v == "realistic" else tables[v]()
        plans[v] = make_plan(t, start=start, time_scale=time_scale, max_model_len=limit, source=f"{source} ({v})",
                             release=release if v == "realistic" else "auto")
        bounds[v] = check_slo(plans[v], prof, slo_ttft, slo_tpot, goodput, v)
        k = prefix_keys(t)
        keys[v] = None if router != "prefix-aware" else (
            k[plans[v].row] if k is not None else np.full(len(plans[v]), -1, np.int64))
        blocks[v] = prompt_blocks(plans[v], prof.page_size)  # once, not at every N
    result = {"tool": "servegen-fast provision", "trace": source, "profile": prof.measured_on,
              "slo": {"ttft_s": slo_ttft, "tpot_s": slo_tpot, "goodput": goodput}, "router": router,
              "window_s": window, "seed": seed, "release": base.options["release"], "pass_spread": bool(prof.spread),
              "variants": {}}
    for v in variants:
        log(f"searching N for the {v} trace ({len(plans[v])} requests)")
        n, curve = smallest_n(plans[v], prof, router, slo_ttft, slo_tpot, goodput, max_instances, v, keys[v],
                              blocks[v], seed)
        result["variants"][v] = {"instances": n, "requests": len(plans[v]), "idle_bound": bounds[v],
                                 "curve": {str(k): curve[k] for k in sorted(curve)}}
    n_real = result["variants"]["realistic"]["instances"]
    for v in variants:
        if v != "realistic":
            result["variants"][v]["under_provisioning"] = (n_real - result["variants"][v]["instances"]) / n_real
    top = max(r["instances"] for r in result["variants"].values())
    if plot and top <= 64:  # full curves for the plot (each N one more simulation of every variant)
        for v in variants:
            c = result["variants"][v]["curve"]
            for n in range(1, min(max_instances, int(np.ceil(top * 1.5)) + 1)):
                if str(n) not in c:
                    c[str(n)] = attainment(plans[v], prof, n, router, slo_ttft, slo_tpot, keys[v], blocks[v], seed)
            result["variants"][v]["curve"] = {k: c[k] for k in sorted(c, key=int)}
    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "provision.json", json.dumps(result, indent=1))
        if plot:
            result["plots"] = [str(plot_curves(result, out / "provision.png"))]
    return result


def plot_curves(result: dict, path) -> Path:
    """SLO attainment against N, one line per variant, the target as a dashed line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'servegen-fast[plot]'") from None
    from ..io.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for v, r in result["variants"].items():
        ns = [int(k) for k in r["curve"]]
        ax.plot(ns, list(r["curve"].values()), marker="o", ms=3, label=f"{v}: N = {r['instances']}")
    ax.axhline(result["slo"]["goodput"], ls="--", color="gray", lw=1)
    ax.set_xlabel("instances N")
    ax.set_ylabel("SLO attainment")
    ax.legend()
    ax.grid(alpha=0.3)
    p = Path(path)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return p
