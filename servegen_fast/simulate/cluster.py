"""Simulate a serving cluster under a trace: the library calls behind `servegen-fast simulate`.

`run_plan` runs the compiled event loop (`kernel.py`) on a replay plan (`replay.plan`: the
same selection, time scale and context fitting as replay) and returns the per-request times;
`simulate_trace` writes them as replay results (`replay.results`: requests.arrow,
engine_stats.arrow, summary.json/.txt), so `analyze` and the plots read a simulation as they
read a replay. A trace without sessions is streamed (`stream_plan`): its results are written
batch by batch as they finish and summarized from the file, in memory bounded by the batches
in flight. Simulated times have no release lateness: a request is released at its
scheduled time. Deterministic: the same trace, profile and options give the same results.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..replay.plan import ReplayPlan, make_plan, selected_rows
from ..replay.results import RunRecord, write_results
from ..version import __version__
from .kernel import COMPLETED, ROUTERS, simulate_kernel, work_arrays
from .prefix import cached_tokens, enabled, make_state
from .profile import Profile, load_profile

STATS_SAMPLES = 4096  # KV / queue samples over the run (a grid of at most this many points)
KEY_COLUMNS = ("session_id", "prefix_id")  # prefix-aware routing keys, first present wins


@dataclass
class SimResult:
    instance: np.ndarray  # int64 (-1: dropped)
    started: np.ndarray  # float64 seconds from the run start
    first_token: np.ndarray
    completed: np.ndarray
    generated: np.ndarray  # int64
    preempted: np.ndarray  # bool
    status: np.ndarray  # int8: kernel.COMPLETED | kernel.DROPPED
    cached: np.ndarray | None  # int64 prompt tokens found in the instance's prefix cache (None: reuse off)
    released: np.ndarray  # float64 arrival at the router (closed loop: previous turn's end + think time)
    stats_time: np.ndarray
    kv_used_fraction: np.ndarray  # cluster-wide, at stats_time
    running: np.ndarray
    waiting: np.ndarray
    end: float  # when the last instance went idle


def check_options(profile: Profile, instances: int, router: str) -> None:
    if not isinstance(instances, (int, np.integer)) or instances < 1:
        raise ValueError(f"instances must be a positive integer, got {instances!r}")
    if router not in ROUTERS:
        raise ValueError(f"unknown router {router!r}; expected one of {', '.join(ROUTERS)}")


def run_plan(plan: ReplayPlan, profile: Profile, instances: int, router: str = "round-robin",
             keys: np.ndarray | None = None, blocks: tuple | None = None, reuse: bool = True,
             seed: int = 0) -> SimResult:
    """Simulate `instances` copies of the profiled engine behind `router` on the plan's requests
    (`seed`: of the draws from the profile's pass-time spread).
    Prefix reuse (prefix.py) where `reuse` and block ids are known: `blocks` = (offsets [n + 1],
    ids) of each request's prompt blocks at the profile's page size, else from the plan's trace."""
    check_options(profile, instances, router)
    n = len(plan)
    if router == "prefix-aware" and keys is None:
        raise ValueError("router prefix-aware needs a prefix key per request (a trace column "
                         f"{' or '.join(KEY_COLUMNS)}); this trace has none: use round-robin or least-loaded")
    key = np.full(n, -1, np.int64) if keys is None else np.asarray(keys, np.int64)
    follower, think = session_links(plan)
    heads = plan.scheduled.astype(np.float64)
    heads[follower[follower >= 0]] = np.inf  # a later turn arrives when its predecessor ends
    order = np.argsort(heads, kind="stable")  # afap or scaled plans stay in time order; be safe
    back = np.empty(n, np.int64)
    back[order] = np.arange(n)
    arrival = heads[order]
    follower = np.where(follower[order] >= 0, back[np.maximum(follower[order], 0)], -1)
    inp = plan.input_tokens[order].astype(np.int64)
    out = plan.output_tokens[order].astype(np.int64)
    fin = arrival[np.isfinite(arrival)]
    st_dt = stats_step(float(fin[-1]) if len(fin) else 0.0)
    inst = np.zeros(n, np.int64)
    started, first, done, released = (np.full(n, np.nan) for _ in range(4))
    gen = np.zeros(n, np.int64)
    pre = np.zeros(n, np.uint8)
    status = np.full(n, -1, np.int8)  # -1: never arrived (a bug if any is left)
    st_kv, st_run, st_wait = (np.zeros(STATS_SAMPLES, np.int64) for _ in range(3))
    seqs = min(profile.max_seqs, profile.max_batch_tokens)
    admit = int(np.ceil(profile.admit_free_fraction * profile.kv_blocks))
    if blocks is None and reuse:
        blocks = prompt_blocks(plan, profile.page_size)
    if blocks is not None and reuse:
        off, ids = (np.asarray(a, np.int64) for a in blocks)
        lo, hi = off[order], off[order + 1]
        boff = np.zeros(n + 1, np.int64)
        np.cumsum(hi - lo, out=boff[1:])
        bids = ids[np.repeat(lo - boff[:-1], hi - lo) + np.arange(boff[-1])]
        pc = make_state(int(instances), profile.kv_blocks, boff, bids, n)
    else:
        pc = make_state(int(instances), profile.kv_blocks, None, None, n)
    work = work_arrays(n, int(instances), seqs, profile.kv_blocks)
    simulate_kernel(arrival, follower, think[order], inp, out, key[order], ROUTERS[router], int(instances),
                    profile.coef_array(seed), profile.page_size, profile.kv_blocks, profile.max_batch_tokens, seqs, admit,
                    st_dt, inst, started, first, done, gen, pre, status, released, st_kv, st_run, st_wait, pc, work)
    return _result(profile, instances, work[0], st_dt, (st_kv, st_run, st_wait), inst[back], started[back],
                   first[back], done[back], gen[back], pre[back], status[back], released[back],
                   cached_tokens(pc, n)[back] if enabled(pc) else None)


def stats_step(span: float) -> float:
    """The KV / queue sampling interval for arrivals over [0, span]: half the grid covers the
    arrivals, the rest the drain."""
    return max(span, 1e-3) / (STATS_SAMPLES // 2)


def _result(profile, instances, clock, st_dt, stats, inst, started, first, done, gen, pre, status, released,
            cached) -> SimResult:
    return SimResult(instance=inst, started=started, first_token=first, completed=done, released=released,
                     cached=cached, generated=gen, preempted=pre.astype(bool), status=status,
                     **_stats(profile, instances, clock, st_dt, stats, len(inst)))


def _stats(profile, instances, clock, st_dt, stats, n: int) -> dict:
    """The KV / queue samples up to the end (when the last instance went idle) of a run of n requests."""
    end = float(clock.max()) if n else 0.0
    g = int(min(STATS_SAMPLES, np.floor(end / st_dt) + 1))
    st_kv, st_run, st_wait = stats
    return dict(stats_time=np.arange(g) * st_dt, kv_used_fraction=st_kv[:g] / (profile.kv_blocks * instances),
                running=st_run[:g].astype(np.float64), waiting=st_wait[:g].astype(np.float64), end=end)


def chunk_result(cols: dict, **stats) -> SimResult:
    """`Stream` result columns as a SimResult (`stats`: its stats fields; default none)."""
    none = np.zeros(0)
    stats = dict(dict(stats_time=none, kv_used_fraction=none, running=none, waiting=none, end=0.0), **stats)
    return SimResult(instance=cols["inst"], started=cols["started"], first_token=cols["first"],
                     completed=cols["done"], generated=cols["gen"], preempted=cols["preempted"].astype(bool),
                     status=cols["status"], cached=None, released=cols["released"], **stats)


def stream_plan(chunks, profile: Profile, instances: int, router: str, emit, seed: int = 0) -> SimResult:
    """Simulate a plan met in chunks (`chunks()` yields ReplayPlans, each in time order and after
    the previous one: a trace's record batches), open loop without prefix reuse, the loop's state
    carried between chunks (stream.py). `emit(plan, cols)` is called for each chunk, in order,
    once all its requests are finished (cols: `Stream` RESULTS columns in the chunk's order), so
    only chunks with requests in flight are held. Returns the run's stats and end (per-request
    fields empty). `chunks()` is called twice: the stats grid needs the last arrival first."""
    from .stream import RESULTS, Stream

    check_options(profile, instances, router)
    span, n = 0.0, 0
    for p in chunks():
        span = max(span, float(p.scheduled.max())) if len(p) else span
        n += len(p)
    if n == 0:
        raise ValueError("no requests to simulate")
    stream = Stream(profile, instances, router, stats_step(span), STATS_SAMPLES, seed)
    pending = []  # [first global id, plan, result columns, requests not finished], in order

    def keep(done):
        gid = done["gid"]
        which = np.searchsorted(np.array([c[0] for c in pending]), gid, side="right") - 1
        for j in np.unique(which):
            sel = which == j
            base, _, cols, _ = pending[j]
            for name, col in cols.items():
                col[gid[sel] - base] = done[name][sel]
            pending[j][3] -= int(sel.sum())
        while pending and pending[0][3] == 0:
            _, p, cols, _ = pending.pop(0)
            emit(p, cols)

    at = 0
    for p in chunks():
        if p.closed_loop:
            raise ValueError("a streamed simulation is open loop (sessions are simulated from the whole trace)")
        if at + len(p) > n:
            raise ValueError("the trace changed while it was simulated")
        pending.append([at, p, Stream.columns(len(p), RESULTS), len(p)])
        order = np.argsort(p.scheduled, kind="stable")
        try:
            keep(stream.feed(at + order, p.scheduled[order], p.input_tokens[order], p.output_tokens[order]))
        except ValueError as e:
            raise ValueError(f"rows {at}..{at + len(p) - 1}: {e}") from None
        at += len(p)
    keep(stream.feed([], [], [], [], final=True))
    if pending or at != n:
        raise ValueError("the trace changed while it was simulated")
    return chunk_result(Stream.columns(0, RESULTS), **_stats(profile, instances, stream.work[0], stream.st_dt,
                                                             stream.stats, n))


def run_chunks(chunks, profile: Profile, instances: int, router: str = "round-robin",
               seed: int = 0) -> tuple[ReplayPlan, SimResult]:
    """`stream_plan` with every chunk's plan and results gathered: the same results as `run_plan`
    on the chunks' concatenation, returned with it (memory grows with the trace)."""
    from .stream import RESULTS, Stream

    parts = []
    res = stream_plan(chunks, profile, instances, router, lambda p, cols: parts.append((p, cols)), seed)
    n = sum(len(p) for p, _ in parts)
    plan, cols = _empty_plan(parts[0][0], n), Stream.columns(n, RESULTS)
    at = 0
    for p, c in parts:
        for name in PLAN_COLUMNS:
            getattr(plan, name)[at:at + len(p)] = getattr(p, name)
        for name, col in cols.items():
            col[at:at + len(p)] = c[name]
        at += len(p)
    whole = chunk_result(cols, **{name: getattr(res, name) for name in
                                  ("stats_time", "kv_used_fraction", "running", "waiting", "end")})
    return plan, whole


PLAN_COLUMNS = ("row", "client_id", "arrival", "scheduled", "trace_input", "trace_output", "input_tokens",
                "output_tokens")


def _empty_plan(like: ReplayPlan, n: int) -> ReplayPlan:
    """A plan of n requests with `like`'s column types and options (open loop, no sessions)."""
    return ReplayPlan(**{name: np.empty(n, getattr(like, name).dtype) for name in PLAN_COLUMNS},
                      options=dict(like.options), closed_loop=False, think_scale=like.think_scale)


def session_links(plan: ReplayPlan) -> tuple[np.ndarray, np.ndarray]:
    """Closed loop (plan.closed_loop): per request the plan position of its session's next turn
    (-1: none) and its own think time x think scale (seconds after the previous turn ends); as
    replay's `timing.Releases` orders turns. Open loop: no links."""
    n = len(plan)
    follower = np.full(n, -1, np.int64)
    if not plan.closed_loop or plan.session_id is None or n == 0:
        return follower, np.zeros(n)
    sid, tn = np.asarray(plan.session_id), np.asarray(plan.turn)
    order = np.lexsort((np.arange(n), tn, sid))
    same = sid[order[1:]] == sid[order[:-1]]
    follower[order[:-1][same]] = order[1:][same]
    return follower, np.asarray(plan.think_time, np.float64) * float(plan.think_scale)


def prompt_blocks(plan: ReplayPlan, page: int) -> tuple | None:
    """(offsets, ids) of the served prompts' blocks at `page` tokens (io/blocks.py `hash_ids`,
    as replay's expected cache hits); None where the trace has no block metadata."""
    if plan.block_spec is None:
        return None
    import pyarrow as pa

    from ..io.blocks import BlockSpec, hash_ids

    spec = BlockSpec(plan.block_spec.seed, int(page), plan.block_spec.profiles)
    batch = pa.table({"session_id": pa.array(plan.session_id, pa.uint64()),
                      "client_id": pa.array(plan.client_id, pa.uint32()),
                      "prefix_id": pa.array(np.where(plan.prefix_id < 0, 0, plan.prefix_id), pa.int64(),
                                            mask=plan.prefix_id < 0),
                      "input_tokens": pa.array(plan.input_tokens.astype(np.int64), pa.int64())})
    ids = hash_ids(batch, spec)
    return ids.offsets.to_numpy().astype(np.int64), ids.values.to_numpy().astype(np.int64)


def prefix_keys(table) -> np.ndarray | None:
    for name in KEY_COLUMNS:
        if name in table.column_names:
            return table.column(name).to_numpy(zero_copy_only=False).astype(np.int64)
    return None


def run_record(plan: ReplayPlan, res: SimResult, expected: np.ndarray | None = None) -> RunRecord:
    ok = res.status == COMPLETED
    status = np.where(ok, "completed", "failed").tolist()
    errors = [None if o else "dropped: prompt + output exceed the KV cache" for o in ok]
    return RunRecord(plan=plan, t0=0.0, released=res.released, scheduled=res.released, started=res.started,
                     first_token=res.first_token, completed=res.completed, generated=res.generated,
                     preempted=res.preempted, status=status, errors=errors, stats=stats_list(res), interrupted=False,
                     wall_end=res.end, cached=res.cached,
                     expected_cached=expected if expected is not None or res.cached is None else np.full(len(plan), -1))


def stats_list(res: SimResult) -> list:
    """The KV / queue samples as RunRecord.stats."""
    return [(float(t), {"kv_used_fraction": float(k), "running": float(r), "waiting": float(w)})
            for t, k, r, w in zip(res.stats_time, res.kv_used_fraction, res.running, res.waiting)]


def simulate_trace(trace, output, *, profile, instances: int, router: str = "round-robin",
                   time_scale: float = 1.0, start: float | None = None, end: float | None = None, clients=None,
                   max_requests: int | None = None, release: str = "auto", slo_ttft: float | None = None,
                   slo_tpot: float | None = None, spread: bool = True, seed: int = 0,
                   plot: bool = False, log=None) -> dict:
    """Simulate `trace` (a path or an Arrow table) on `instances` engines of `profile`; write
    replay-shaped results to `output`; return the summary. `release`: as replay's (auto: closed
    loop where the trace has sessions); `spread` False: every pass at the profile's fitted time;
    `seed`: of the draws from the profile's pass-time spread."""
    import pyarrow as pa

    from ..io.trace import read_trace

    log = log or (lambda msg: None)
    prof = load_profile(profile)
    if not spread:
        prof = prof.without_spread()
    check_options(prof, instances, router)
    prof.coef_array(seed)  # a bad seed fails here, before any work
    limit = int(prof.measured_on.get("max_model_len") or 0) or None
    select = dict(start=start, end=end, clients=clients, time_scale=time_scale, max_model_len=limit, release=release)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a directory")
    streamed = not isinstance(trace, pa.Table) and _streamable(trace, router)
    m = prof.measured_on

    def meta(options: dict, source: str, reuse: bool) -> dict:
        return {"tool": "servegen-fast simulate", "version": __version__, "trace": source,
                "engine": {"name": "simulate", "model": m.get("model", "?"), "device": f"{instances} x {m.get('device', '?')}",
                           "dtype": m.get("dtype", "?"), "profile": str(profile) if not isinstance(profile, Profile) else "<profile>",
                           "instances": int(instances), "router": router,
                           "prefix_reuse": reuse, "streamed": streamed, "pass_spread": bool(prof.spread),
                           "seed": int(seed), "measured_on": m},
                "options": dict(options), "interrupted": False}

    if streamed:  # open loop: batch by batch, the loop's state carried, results written as chunks finish
        log(f"simulating {trace} batch by batch on {instances} instance(s), router {router}")
        summary = _write_streamed(out, lambda: _plan_chunks(trace, max_requests, select), prof, instances, router,
                                  lambda options: meta(options, str(trace), False), slo_ttft, slo_tpot, seed)
    else:
        table, source = (trace, "<table>") if isinstance(trace, pa.Table) else (read_trace(trace), str(trace))
        plan = make_plan(table, max_requests=max_requests, source=source, **select)
        keys = prefix_keys(table)
        if keys is not None:
            keys = keys[plan.row]
        log(f"simulating {len(plan)} requests on {instances} instance(s), router {router}")
        res = run_plan(plan, prof, instances, router, keys, seed=seed)
        expected = None
        if res.cached is not None and instances == 1:  # replay's one-engine expectation beside the simulated hits
            from ..replay.cache import expected_cached

            done = np.flatnonzero(np.isfinite(res.released))
            order = done[np.argsort(res.released[done], kind="stable")]
            expected = expected_cached(plan, order, prof.page_size, prof.kv_blocks * prof.page_size)
        summary = write_results(out, run_record(plan, res, expected), slo_ttft=slo_ttft, slo_tpot=slo_tpot,
                                metadata=meta(plan.options, source, res.cached is not None))
    if plot:
        from ..replay.plots import plot_results

        summary["plots"] = [str(p) for p in plot_results(out)]
    return summary


def _write_streamed(out: Path, chunks, prof: Profile, instances: int, router: str, meta, slo_ttft, slo_tpot,
                    seed: int = 0) -> dict:
    """`stream_plan` with each finished chunk appended to requests.arrow (replay.results'
    `request_writer`), then the stats and the summary, read back batch by batch
    (replay.filesummary): the files `write_results` gives, in memory bounded by the chunks."""
    from ..replay.filesummary import summarize_file
    from ..replay.results import REQUESTS_FILE, STATS_FILE, request_writer, stats_table, write_arrow, write_summary

    out.mkdir(parents=True, exist_ok=True)
    batches = chunks()
    first = next(batches, None)
    batches.close()
    if first is None:
        raise ValueError("no requests to simulate")
    metadata = dict(meta(first.options), complete=True)
    with request_writer(out / REQUESTS_FILE, metadata) as write:
        res = stream_plan(chunks, prof, instances, router, lambda p, cols: write(run_record(p, chunk_result(cols))),
                          seed)
    stats = stats_table(stats_list(res))
    write_arrow(stats, out / STATS_FILE)
    return write_summary(out, dict(metadata, **summarize_file(out / REQUESTS_FILE, slo_ttft, slo_tpot, stats)))


def _streamable(path, router: str) -> bool:
    """A trace file or directory is simulated batch by batch unless it has sessions (closed loop
    and prefix reuse need it whole) or the router needs their keys."""
    from ..io.trace import read_schema
    from ..replay.plan import SESSION_COLUMNS

    names = read_schema(path).names
    return router != "prefix-aware" and not any(c in names for c in SESSION_COLUMNS)


def _plan_chunks(path, max_requests, select):
    """make_plan of each record batch of the trace at `path` (rows numbered over the whole trace)."""
    import pyarrow as pa

    from ..io.trace import iter_batches

    offset, left = 0, max_requests
    for batch in iter_batches(path):
        table = pa.Table.from_batches([batch])
        n = table.num_rows
        if left is not None and left <= 0:
            break
        rows = selected_rows(table.column("timestamp").to_numpy(), table.column("client_id").to_numpy(),
                             select["start"], select["end"], select["clients"])
        if len(rows):  # make_plan refuses an empty selection
            p = make_plan(table, max_requests=left, source=str(path), **select)
            p.row = p.row + offset
            if left is not None:
                left -= len(p)
            yield p
        offset += n
