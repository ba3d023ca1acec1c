"""The calibration sweep: run the on-device engine (`replay.local`, transformers continuous
batching) through prefill chunks and decode batches of varied sizes and context lengths,
record every forward pass (its batch composition and its duration), and fit the profile's
step-time model (`profile.py`) by least squares.

The sweep is released through replay's own loop (`replay.local.loop.run`), so the engine
runs beside the same host-side work (prompt building, polling, snapshots) as in a replay.
Recording: the adapter's scheduler is wrapped, so each pass is seen as the engine built it
(query tokens of prefill chunks, decode sequences, KV tokens attended) with the time from one
scheduling call to the next (scheduling, the forward pass, sampling and the state update: what
one step of the simulator stands for). A pass followed by an idle wait is timed to the end of
its update instead. transformers only: vLLM's scheduler is not wrapped here.
"""
from __future__ import annotations

import math
import platform
import time

import numpy as np

from ..replay.plan import ReplayPlan
from .profile import Profile, STEP_TERMS

# Waves of (prompt tokens, output tokens, copies) submitted at once; each wave is waited for.
# Decode batches of 1..64 sequences at short and long contexts (one to three sequences at 2,000-4,000);
# lone prefills up to two chunks; a burst of mid-size prompts; mixed waves where new prefills
# join running decodes.
QUICK_SWEEP = (
    [[(p, 24, b)] for p in (16, 512) for b in (1, 4, 16, 48)]
    + [[(1536, 24, b)] for b in (1, 4, 12)]
    + [[(p, 2, 1)] for p in (64, 256, 768, 1536, 2047, 3000)]
    + [[(4000, 48, 1)], [(3000, 64, 2)], [(2000, 64, 3)], [(384, 16, 8)]]
    + [[(32, 48, 24), (1024, 4, 2)], [(256, 32, 8), (1800, 4, 1), (64, 8, 16)], [(2048, 6, 5)],
       [(128, 64, 32), (600, 4, 6)]]
)


WAVE_GAP = 3.0  # seconds between the waves' release times
# After the waves, a stretch of ordinary traffic: (seconds, aggregate req/s, seed) of the built-in
# pool, generated here. The waves' passes follow bursts of large prefills; steady traffic (a few
# sequences decoding, prefills joining them one at a time) is the regime most served traffic is
# in, and on a CPU its passes run measurably faster than the same compositions inside a wave.
TRAFFIC = (120.0, 2.0, 7)


class _Recorder:
    """Wraps a transformers batch processor: one row per forward pass."""

    def __init__(self, bp):
        self.rows: list[tuple] = []  # (t_sched, t_end, prefill_tokens, prefill_seqs, decode_seqs, kv_tokens, prefill_attn)
        self._bp = bp
        sched = bp.scheduler
        self._orig_schedule, self._orig_update = sched.schedule_batch, bp.update_batch
        sched.schedule_batch = self._schedule
        bp.update_batch = self._update
        self._pending = None

    def _schedule(self, token_budget, cache_budget):
        from transformers.generation.continuous_batching.requests import RequestStatus

        t = time.perf_counter()
        decoding = {rid for rid, s in self._bp.scheduler.active_requests.items() if s.status == RequestStatus.DECODING}
        before = {}
        for rid, s in self._bp.scheduler.active_requests.items():
            before[rid] = s.position_offset
        out = self._orig_schedule(token_budget, cache_budget)
        reqs = out[0]
        if reqs:
            pt = ps = ds = kv = attn = 0
            for f in reqs:
                rid = f.state.request_id
                q = int(f.query_length)
                ctx = int(before.get(rid, f.state.position_offset)) + q
                if rid in decoding:
                    ds += 1
                else:
                    pt += q
                    ps += 1
                    attn += q * ctx
                kv += ctx
            self._pending = [t, math.nan, pt, ps, ds, kv, attn]
        return out

    def _update(self):
        self._orig_update()
        if self._pending is not None:
            self._pending[1] = time.perf_counter()
            self.rows.append(tuple(self._pending))
            self._pending = None

    def restore(self):
        self._bp.scheduler.schedule_batch, self._bp.update_batch = self._orig_schedule, self._orig_update

    def steps(self) -> np.ndarray:
        """[n, 6]: duration, prefill tokens, prefill sequences, decode sequences, KV tokens, prefill attention
        (each prefill chunk's query tokens x its sequence's context after the pass, summed)."""
        r = np.array(self.rows, dtype=np.float64).reshape(-1, 7)
        dur = r[:, 1] - r[:, 0]
        nxt = np.append(r[1:, 0], np.inf)
        chained = nxt - r[:, 1] < 2e-3  # the next pass followed at once: time the whole loop iteration
        dur = np.where(chained, nxt - r[:, 0], dur)
        return np.column_stack([dur, r[:, 2:]])


def sweep_plan(waves=QUICK_SWEEP, gap: float = WAVE_GAP) -> ReplayPlan:
    """The sweep as a replay plan: wave k's requests all released at k x gap (later waves may
    join passes of earlier ones: more mixed compositions)."""
    rows = [(k * gap, p, o) for k, wave in enumerate(waves) for p, o, copies in wave for _ in range(copies)]
    t, p, o = (np.array(c) for c in zip(*rows))
    n = len(rows)
    u32 = lambda a: np.asarray(a, np.uint32)  # noqa: E731
    return ReplayPlan(row=np.arange(n, dtype=np.int64), client_id=np.zeros(n, np.uint32), arrival=t.astype(np.float64),
                      scheduled=t.astype(np.float64), trace_input=u32(p), trace_output=u32(o), input_tokens=u32(p),
                      output_tokens=u32(o), options={"calibration": True})


def traffic_plan(seconds: float, rate: float, seed: int, start: float, max_model_len: int | None) -> ReplayPlan:
    """`seconds` of the built-in pool at `rate` req/s (seed `seed`), released from `start` on."""
    from ..io.pool_file import open_pool
    from ..replay.plan import make_plan
    from ..sample.generate import generate_table

    table = generate_table(open_pool("builtin"), rate=rate, duration=int(seconds), seed=seed)
    plan = make_plan(table, max_model_len=max_model_len, source="calibration traffic")
    plan.scheduled = plan.scheduled + start
    return plan


def _joined(a: ReplayPlan, b: ReplayPlan) -> ReplayPlan:
    """The waves' plan then the traffic's (its release times, already after the waves, as arrivals)."""
    cat = lambda x, y: np.concatenate([x, y])  # noqa: E731
    same = ("client_id", "scheduled", "trace_input", "trace_output", "input_tokens", "output_tokens")
    return ReplayPlan(row=np.arange(len(a) + len(b), dtype=np.int64), arrival=cat(a.arrival, b.scheduled),
                      options=dict(a.options), **{f: cat(getattr(a, f), getattr(b, f)) for f in same})


def run_sweep(engine, waves=QUICK_SWEEP, *, seed: int = 0, gap: float = WAVE_GAP, traffic=TRAFFIC,
              log=None) -> tuple[np.ndarray, float]:
    """Release the sweep (the waves, then `traffic` = (seconds, req/s, seed) of ordinary traffic,
    or None) on a started transformers engine through replay's own release loop (so the engine
    runs beside the same host-side work as in a replay): the recorded passes, and the idle
    wake-up (`idle_wake`)."""
    from ..replay.local.loop import run

    log = log or (lambda m: None)
    plan = sweep_plan(waves, gap)
    if traffic:
        seconds, rate, traffic_seed = traffic
        start = float(plan.scheduled[-1]) + gap
        plan = _joined(plan, traffic_plan(seconds, rate, traffic_seed, start, int(engine.max_model_len)))
    rec = _Recorder(engine.manager.batch_processor)
    try:
        log(f"calibration sweep: {len(plan)} requests in {len(waves)} waves and {traffic[0] if traffic else 0:g} s of "
            f"traffic, over {plan.scheduled[-1]:.0f} s")
        r = run(engine, plan, seed=seed)
    finally:
        rec.restore()
    bad = [s for s in r.status if s != "completed"]
    if bad:
        raise RuntimeError(f"calibration: {len(bad)} sweep requests did not complete ({bad[0]})")
    log(f"recorded {len(rec.rows)} forward passes")
    return rec.steps(), idle_wake(r.released, r.started, r.completed)


def idle_wake(released: np.ndarray, started: np.ndarray, completed: np.ndarray) -> float:
    """Median time from release to the first pass of requests released while the engine was idle
    (every earlier request completed): the engine loop's wake-up, which a busy engine does not
    pay (it takes new requests at its next pass). The sweep's first request is left out (warm-up)."""
    order = np.argsort(released, kind="stable")
    rel, st = released[order], started[order]
    done_before = np.maximum.accumulate(completed[order])
    idle = np.zeros(len(rel), bool)
    idle[1:] = done_before[:-1] < rel[1:]
    if idle.sum() < 3:
        raise ValueError("calibration released fewer than 3 requests to an idle engine: cannot measure its wake-up")
    return float(np.median(st[idle] - rel[idle]))


def design(steps: np.ndarray) -> np.ndarray:
    """The step-time model's regressors (STEP_TERMS) of recorded passes ([n, 6]; passes recorded
    without the prefill attention column, [n, 5], get one chunk's: P x K)."""
    pt, ps, ds, kv = steps[:, 1], steps[:, 2], steps[:, 3], steps[:, 4]
    attn = steps[:, 5] if steps.shape[1] > 5 else pt * kv
    pre = (pt > 0).astype(np.float64)
    dec = 1.0 - pre
    batched = dec * (ds > 1)
    return np.column_stack([np.ones(len(steps)), pt, ps, ds, dec * kv, pre * (pt + ds) * kv, pre, pre * attn, pre * kv,
                            batched, batched * kv])


DECODE_TERMS = [0, 3, 4, 9, 10]  # base, decode_seq, kv_token, batched, batched_kv
PREFILL_TERMS = [1, 2, 5, 6, 7, 8]  # prefill_token, prefill_seq, varlen_qk, prefill_pass, prefill_attn, prefill_kv


def fit_steps(steps: np.ndarray) -> tuple[np.ndarray, dict]:
    """Two non-negative fits of duration, each by iteratively reweighted least squares with
    weights 1/predicted (relative errors, so 1 ms decode passes count as much as 1 s prefills,
    without the bias to the fastest observations that weighting by the observed time gives:
    pass times on a shared CPU are right-skewed). Decode-only passes
    give base, decode_seq, kv_token, batched and batched_kv; passes with a prefill chunk give the prefill terms
    on what base and decode_seq leave. The first pass (the engine's first after warm-up) is left out."""
    steps = steps[1:]
    X, y = design(steps), steps[:, 0]
    dec = X[:, 1] == 0
    if dec.sum() < 5 or (~dec).sum() < 5:
        raise ValueError("calibration recorded too few decode-only or prefill passes to fit a profile")
    coef = np.zeros(X.shape[1])
    coef[DECODE_TERMS] = _irls(X[dec][:, DECODE_TERMS], y[dec])
    rest = y[~dec] - X[~dec] @ coef
    coef[PREFILL_TERMS] = _irls(X[~dec][:, PREFILL_TERMS], rest)
    pred = X @ coef
    rel = (pred - y) / y
    stats = {"passes": int(len(y)), "median_abs_rel_error": float(np.median(np.abs(rel))),
             "decode_total_time_rel_error": float(pred[dec].sum() / y[dec].sum() - 1.0),
             "prefill_total_time_rel_error": float(pred[~dec].sum() / y[~dec].sum() - 1.0),
             "p90_abs_rel_error": float(np.percentile(np.abs(rel), 90)),
             "total_time_rel_error": float(pred.sum() / y.sum() - 1.0),
             "range": {name: [float(X[:, j].min()), float(X[:, j].max())] for j, name in enumerate(STEP_TERMS)}}
    return coef, stats


SPREAD_QUANTILES = 33
MIN_SPREAD_PASSES = 30


def pass_spread(steps: np.ndarray, coef: np.ndarray, n: int = SPREAD_QUANTILES) -> list:
    """The profile's spread: n quantiles (at probabilities 0, 1/(n-1), .., 1) of measured / fitted
    time of the passes with a prefill chunk, scaled so that their piecewise-linear distribution
    has mean 1 (the fit stays the mean pass time). On a CPU, the same prefill varies by tens of
    percent from one pass to the next; a tail percentile over many similar requests falls within
    that spread, which a deterministic pass time misses. [] with fewer than MIN_SPREAD_PASSES
    such passes. The first pass is left out, as in the fit."""
    steps = steps[1:]
    pre = steps[:, 1] > 0
    if pre.sum() < MIN_SPREAD_PASSES:
        return []
    ratio = steps[pre, 0] / np.maximum(design(steps[pre]) @ coef, 1e-12)
    q = np.quantile(ratio, np.linspace(0.0, 1.0, n))
    q /= np.mean((q[:-1] + q[1:]) / 2)
    return [float(v) for v in q]


def _irls(A: np.ndarray, b: np.ndarray, rounds: int = 6) -> np.ndarray:
    w = np.ones(len(b))
    for _ in range(rounds):
        c = _nnls(A * w[:, None], b * w)
        w = 1.0 / np.maximum(A @ c, 1e-5)
    return c


def _nnls(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Lawson-Hanson active-set NNLS (small problems: a handful of columns)."""
    m, n = A.shape
    x = np.zeros(n)
    passive = np.zeros(n, bool)
    for _ in range(3 * n + 10):
        w = A.T @ (b - A @ x)
        if passive.all() or (w[~passive] <= 1e-12 * np.abs(w).max()).all():
            break
        j = np.flatnonzero(~passive)[np.argmax(w[~passive])]
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(A[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
    return x


def calibrate(*, engine: str = "transformers", model: str = "tiny", device: str = "cpu", seed: int = 0,
              waves=QUICK_SWEEP, gap: float = WAVE_GAP, traffic=TRAFFIC, engine_options: dict | None = None,
              log=None) -> tuple[Profile, np.ndarray]:
    """Measure a profile on the on-device engine: (profile, recorded passes)."""
    from ..replay.local.registry import make_engine
    from ..version import __version__

    if engine != "transformers":
        raise ValueError(f"calibration supports the transformers engine only, got {engine!r}")
    log = log or (lambda m: None)
    eng = make_engine(engine, model, device=device, seed=seed, **(engine_options or {}))
    log(f"starting {engine} ({model}, {eng.info.device})")
    eng.start()
    try:
        margin = float(eng.manager.batch_processor.scheduler.safety_margin)
        # the release loop stops the engine at the end
        steps, wake = run_sweep(eng, waves, seed=seed, gap=gap, traffic=traffic, log=log)
    finally:
        eng.stop()
    coef, stats = fit_steps(steps)
    import torch
    import transformers

    d = eng.info.details
    prof = Profile(
        coefficients=dict(zip(STEP_TERMS, (float(c) for c in coef))),
        page_size=int(d["page_size"]), kv_blocks=int(d["kv_num_blocks"]), max_batch_tokens=int(d["max_batch_tokens"]),
        max_seqs=min(1024, int(d["max_batch_tokens"])), admit_free_fraction=margin, idle_wake=wake,
        spread=pass_spread(steps, coef),
        measured_on={"engine": engine, "model": eng.info.model, "device": eng.info.device, "dtype": eng.info.dtype,
                     "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version(),
                     "servegen_fast": __version__, "date": time.strftime("%Y-%m-%d", time.gmtime()),
                     "threads": int(torch.get_num_threads()), "max_model_len": int(eng.max_model_len),
                     "sweep_waves": len(waves), "sweep_traffic": list(traffic) if traffic else None},
        fit=stats)
    prof.validate()
    return prof, steps
