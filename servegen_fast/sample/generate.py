"""Workload generation: plan chunks of windows, run a backend, yield time-ordered Arrow batches.

Arrival modes (named; see docs/ARCHITECTURE.md):

* ``servegen`` (default, ServeGen's `generate_workload`): in a window of length L with
  client target rate r, draw n = ceil(r·L) inter-arrival times X_i of the window's law
  (Gamma/Weibull with the data's shape; the scale cancels) and place arrivals at
  start + L·S_j/S_n. The n-th lands exactly on the window end and is dropped (ServeGen drops
  it too, up to its float rounding), so a window yields max(n − 1, 0) requests.
* ``renewal``: within each window a stationary renewal process with mean inter-arrival
  1/r and the law's shape (Gamma: shape 1/cv², Weibull: the data's shape, Exponential);
  the first arrival after the window start is drawn from the equilibrium (forward
  recurrence) distribution, as a process carried over the boundary shows in steady state.
  Windows are independent given their parameters, so any window can be generated alone.
* ``poisson``: the same with exponential inter-arrivals at the same rates.

Populations (`population.Population`: fleet-scale synthetic clients, or a pool extended
past its horizon) generate the same way; their per-(client, window) parameters are built
one chunk of windows at a time, so memory stays O(clients) plus one chunk. A synthesized
population's default mode is ``renewal``: its clients are many and small, and ServeGen's
rule gives a window nothing unless rate·L > 1.

Lengths: each request draws its base fields by inverse CDF from its client's distribution
in the length window covering its arrival window; ``comonotone`` (ServeGen: one uniform
for all fields), ``independent``, or a float rho in [0, 1] for a Gaussian copula with
equicorrelation rho between the base fields; None (the default) takes the pool's own
(`ClientPool.length_correlation`, set by a fit), else comonotone.

A pool fitted to a log with a coarse clock (`clock_step`, e.g. Mooncake's 3 s ticks) floors
its timestamps to multiples of that step, as the log records them.

Intra-window modulation: a pool with `mod_sigma` > 0 for a (client, window) warps that unit's
arrivals by a keyed log-normal intensity (kernels/modulation.py); plain windows are untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from ..io.trace import trace_schema
from ..kernels.codes import (ARRIVAL_STREAM, ARRIVAL_STREAMS, CORR_COMONOTONE, CORR_COPULA, CORR_INDEPENDENT,
                             LAW_STREAM2, MODE_RENEWAL, MODE_SERVEGEN)
from ..model import rates as _rates
from ..model.fields import ITEM_FIELDS, LAW_EXPONENTIAL
from ..model.pool import ClientPool
from ..model.population import Population
from ..model.units import Units
from .backend import BACKENDS, Backend, load_backend
from .batches import to_batch
from .plan import (DEFAULT_CHUNK_BYTES, chunk_units, plan_chunks, renewal_params, room_offsets, servegen_counts,
                   window_range)
from .sessions import SESSION_STREAM, SessionExpander, prehistory_units, resolve as resolve_sessions
from ..model.sessions import DEFAULT_BLOCK_SIZE

MODES = ("servegen", "renewal", "poisson")
# With sessions a chunk's budget is at most this: the session stage's working set (roles, later
# turns, merge) then stays in cache (about 8% less CPU and 18% less wall time than at 256 MiB on a
# 12 h day, benchmarks/README.md); a trace's bytes do not depend on its chunks.
SESSION_CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class GenerateOptions:
    seed: int = 0
    mode: str = "servegen"
    correlation: object = "comonotone"
    backend: str = "cpu"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    include_reason_ratio: bool = False
    arrival_stream: int = ARRIVAL_STREAM


def _correlation_mode(correlation) -> tuple[int, float]:
    if correlation in (None, "comonotone"):
        return CORR_COMONOTONE, 1.0
    if correlation == "independent":
        return CORR_INDEPENDENT, 0.0
    try:
        rho = float(correlation)
    except (TypeError, ValueError):
        raise ValueError(f"correlation must be 'comonotone', 'independent' or a number in [0, 1], "
                         f"got {correlation!r}") from None
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"copula correlation must be in [0, 1], got {rho}")
    return CORR_COPULA, rho


def effective_correlation(pool, correlation):
    """`correlation`, or where it is None the pool's own: a fitted pool carries the copula
    correlation of its log (`ClientPool.length_correlation`); ServeGen pools keep comonotone."""
    if correlation is not None:
        return correlation
    src = getattr(pool, "source", pool)  # a Population generates its source pool's clients
    rho = getattr(src, "length_correlation", None)
    return "comonotone" if rho is None else float(rho)


def default_mode(pool) -> str:
    """``renewal`` for a synthesized population (many small clients: ServeGen's rule gives a
    window nothing unless rate·L > 1), ``servegen`` otherwise."""
    synthetic = isinstance(pool, Population) and (pool.params or {}).get("kind") == "population"
    return "renewal" if synthetic else "servegen"


def _validate(pool: ClientPool, duration, start, opts: GenerateOptions) -> tuple[int, int]:
    if not isinstance(pool, (ClientPool, Population)):
        raise TypeError(f"pool must be a ClientPool or a Population, got {type(pool).__name__}")
    if opts.mode not in MODES:
        raise ValueError(f"unknown arrival mode {opts.mode!r}; expected one of {MODES}")
    if opts.backend not in BACKENDS:
        raise ValueError(f"unknown backend {opts.backend!r}; expected one of {BACKENDS}")
    if not (isinstance(opts.seed, (int, np.integer)) and 0 <= opts.seed < 2 ** 64):
        raise ValueError(f"seed must be an integer in [0, 2**64), got {opts.seed!r}")
    if opts.arrival_stream not in ARRIVAL_STREAMS:
        raise ValueError(f"arrival_stream must be one of {ARRIVAL_STREAMS}, got {opts.arrival_stream!r}")
    if opts.chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {opts.chunk_bytes}")
    _correlation_mode(opts.correlation)
    if not float(start).is_integer() or start < 0:
        raise ValueError(f"start must be a non-negative whole number of seconds, got {start!r}")
    start = int(start)
    if duration is None:
        duration = pool.duration - start
    if not float(duration).is_integer() or duration <= 0:
        raise ValueError(f"duration must be a positive whole number of seconds, got {duration!r}")
    return start, int(duration)


def generate(pool: ClientPool | Population, rate=None, duration: int | None = None, *, start: int = 0,
             seed: int = 0, mode: str | None = None, correlation=None, backend: str = "cpu",
             chunk_bytes: int = DEFAULT_CHUNK_BYTES, include_reason_ratio: bool = False,
             metadata: dict | None = None, progress: Callable[[int, float], None] | None = None,
             only: tuple[int, int] | None = None, sessions=None,
             block_size: int = DEFAULT_BLOCK_SIZE, arrival_stream: int = ARRIVAL_STREAM,
             session_stream: int = SESSION_STREAM) -> Iterator[pa.RecordBatch]:
    """Yield the trace of `pool` over [start, start + duration) as Arrow record batches in time order.

    `rate` is anything `rates.as_rate_fn` accepts (None: the pool's own rates). Timestamps
    are seconds from `start`. `mode` defaults to ``servegen`` (``renewal`` for a synthesized
    population). `only=(t0, t1)` (seconds from `start`, on window boundaries) yields just
    the rows of [t0, t1), identical to those rows of the whole trace: rates are resolved
    over the whole span and every draw is keyed, so any part can be generated alone.
    `progress(rows_so_far, seconds_done)` is called after each chunk. Arguments are checked
    when this is called, not when the first batch is drawn. `sessions` (a SessionProfiles, a
    profile file or a built-in name; None: off) adds multi-turn sessions and shared prompts
    (sample/sessions.py); `block_size` is recorded for the block ids derived on read.
    `arrival_stream` picks the inter-arrival random stream (kernels/codes.py; 1 for traces made
    before stream 2, which record no `arrival_stream`); `session_stream` the sessions' random
    stream version (1 for traces made before versions, see sample/sessions.py).
    """
    if mode is None:
        mode = default_mode(pool)
    opts = GenerateOptions(seed, mode, effective_correlation(pool, correlation), backend, chunk_bytes,
                           include_reason_ratio, arrival_stream)
    start, duration = _validate(pool, duration, start, opts)
    view = pool.span(start, start + duration)
    rate_fn = _rates.as_rate_fn(rate)
    aggregate = np.asarray(rate_fn.per_window(view), dtype=np.float64)
    if isinstance(view, Population):
        native = view.aggregate_rate()
        _rates.check_aggregate(view, aggregate)
        with np.errstate(invalid="ignore", divide="ignore"):
            targets = np.where(native > 0, aggregate / native, 0.0)  # per-window factor on client rates
    else:
        targets = _rates.client_targets(view, aggregate)
    w_lo, w_hi = window_range(view, only)
    profiles = resolve_sessions(sessions, block_size, view, session_stream)
    if profiles is not None and opts.chunk_bytes > SESSION_CHUNK_BYTES:
        opts = replace(opts, chunk_bytes=SESSION_CHUNK_BYTES)
    schema = trace_schema(view.category, view.fields, include_reason_ratio, metadata, sessions=profiles is not None)
    kern = load_backend(backend)
    expander = None
    if profiles is not None:
        expander = SessionExpander(kern, view, profiles, opts.seed, [f for f in view.fields if f not in ITEM_FIELDS],
                                   session_stream)
    return _stream(kern, view, targets, aggregate, (w_lo, w_hi), schema, opts, include_reason_ratio, progress,
                   expander)


def _stream(kern, view, targets, aggregate, windows, schema, opts, include_reason_ratio,
            progress, expander=None) -> Iterator[pa.RecordBatch]:
    """Chunks in order. Each chunk is submitted before the previous one is emitted, so with
    the cuda backend the GPU (and the copy back) works on chunk k+1 while the caller encodes
    and writes chunk k; the other backends compute a chunk when it is read out."""
    done_rows = 0
    pending = None
    if expander is not None:
        _session_lookback(kern, view, targets, aggregate, windows[0], opts, expander)
    for span in [*plan_chunks(view, targets, aggregate, windows, opts.mode, opts.chunk_bytes), None]:
        job = None
        if span is not None:
            w0, w1 = span
            job = (_submit_chunk(kern, view, chunk_units(view, targets, w0, w1), w1 - w0, opts, expander), w1)
        if pending is not None:
            submitted, end = pending
            cols = _finish_chunk(kern, view, opts, *submitted)
            if expander is not None:
                cols = expander.process(cols, *cols.pop("_slots"), _window_end(view, end))
            batch = to_batch(cols, view, schema, include_reason_ratio)
            done_rows += batch.num_rows
            if progress is not None:
                progress(done_rows, float(view.window_start[end - 1] + view.window_len[end - 1]))
            if batch.num_rows:
                yield batch
        pending = job


def generate_table(pool: ClientPool, rate=None, duration: int | None = None, **kwargs) -> pa.Table:
    """The whole trace as one Arrow table (for small traces; `generate` streams)."""
    stream = generate(pool, rate, duration, **kwargs)  # checks the arguments first
    schema = trace_schema(pool.category, pool.fields, kwargs.get("include_reason_ratio", False),
                          kwargs.get("metadata"), sessions=kwargs.get("sessions") is not None)
    batches = list(stream)
    return pa.Table.from_batches(batches, schema=schema)


def _window_end(view, w_end: int) -> float:
    """End time of the chunk whose last window is w_end - 1."""
    return float(view.window_start[w_end - 1] + view.window_len[w_end - 1])


def _session_lookback(kern, view, targets, aggregate, w_lo: int, opts, expander) -> None:
    """Seed the carry with the later turns of sessions started before window w_lo that can
    still reach it (their rows before it are dropped): sessions of the windows before it, and
    before time 0 a stationary pre-history, window 0 repeated backwards (sample/sessions.py)."""
    t0 = float(view.window_start[w_lo])
    back = expander.lookback_seconds()
    length0 = float(view.window_len[0])
    for m in range(int(np.ceil(max(back - t0, 0.0) / length0)), 0, -1):
        u = prehistory_units(chunk_units(view, targets, 0, 1), m, length0, int(view.window_index.max()))
        submitted = _submit_chunk(kern, view, u, 1, opts, expander, prehistory=True)
        cols = _finish_chunk(kern, view, opts, *submitted)
        expander.process(cols, *cols.pop("_slots"), t0, emit=False, prehistory=True)
    ends = view.window_start[:w_lo] + view.window_len[:w_lo]
    w_lb = int(np.searchsorted(ends, t0 - back, side="right"))
    for w0, w1 in plan_chunks(view, targets, aggregate, (w_lb, w_lo), opts.mode, opts.chunk_bytes):
        submitted = _submit_chunk(kern, view, chunk_units(view, targets, w0, w1), w1 - w0, opts, expander)
        cols = _finish_chunk(kern, view, opts, *submitted)
        expander.process(cols, *cols.pop("_slots"), t0, emit=False)


def _submit_chunk(kern: Backend, view, u: Units, n_windows: int, opts: GenerateOptions, expander=None,
                  prehistory: bool = False):
    """Start the backend on a chunk's units (`prehistory`: a window before time 0); see _finish_chunk."""
    seed = np.uint64(opts.seed)
    if expander is not None:
        u = replace(u, rate=expander.start_rates(u.client, u.rate, prehistory))
    law = u.law
    pre = None
    if opts.mode == "servegen":
        k = u.shape.astype(np.float64)
        scale = np.ones_like(k)
        counts = servegen_counts(u.rate, u.length)
    else:
        if opts.mode == "poisson":
            law = np.full_like(law, LAW_EXPONENTIAL)
        k, scale = renewal_params(law, u.shape, u.cv, u.rate)
    if opts.arrival_stream == 2:  # the kernels read the stream from the law codes (codes.py)
        law = law + LAW_STREAM2
    if opts.mode != "servegen":
        # one walk counts the arrivals and keeps their times, in rooms of ROOM_BLOCK units
        room_off = room_offsets(u.rate * u.length)
        counts, first = kern.renewal_arrivals(seed, u.client, u.window, u.start, u.length, law, k, scale, room_off)
        pre = (room_off, first)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    n = int(offsets[-1])
    base = [f for f in view.fields if f not in ITEM_FIELDS]
    corr_mode, rho = _correlation_mode(opts.correlation)
    cols = [view.field_index(f) for f in base]
    # the base fields are usually all of them, in order: no copy of the [units, fields] ids then
    dist = u.dist if cols == list(range(u.dist.shape[1])) and u.dist.flags.c_contiguous else \
        np.ascontiguousarray(u.dist[:, cols])
    if n and (dist < 0).any():
        bad = np.argwhere(dist < 0)[0]
        raise ValueError(f"client {int(u.client[bad[0]])} has no {base[bad[1]]} distribution for the window at "
                         f"{int(u.start[bad[0]])} s of the view")
    d = view.dists
    guide, goff = d.guide()
    want_units = any(item in view.fields for item in ITEM_FIELDS) or expander is not None
    # windows are disjoint in time: order within each window, windows in sequence
    first_unit = np.searchsorted(u.wi, np.arange(n_windows + 1))
    mode = MODE_SERVEGEN if opts.mode == "servegen" else MODE_RENEWAL
    args = (mode, seed, u.client, u.window, u.start, u.length, law, k, scale, offsets, first_unit, corr_mode, rho, dist, (d.values, d.cdf, d.offsets, guide, goff), want_units)
    if u.mod is not None or pre is not None:  # only modulated or renewal chunks pass them
        args = args + (u.mod, pre)
    return kern.submit(args), (seed, u, offsets, base, dist if expander is not None else None)


def _finish_chunk(kern, view, opts: GenerateOptions, job, ctx) -> dict:
    """Columns of a submitted chunk, with the multimodal item lists drawn for its rows."""
    seed, u, offsets, base, session_dist = ctx
    ts, cid, vals, perm, unit = job.result()
    step = getattr(getattr(view, "source", view), "clock_step", None)
    if step:  # a fitted log's coarse clock (ClientPool.clock_step): monotone, so the order stands
        ts = np.floor(ts / step) * step
    n = len(ts)
    cols = {"timestamp": ts, "client_id": cid}
    if session_dist is not None:  # each slot's window, index in its unit, and unit (with the units' distributions)
        cols["_slots"] = (u.window[unit], perm - offsets[unit], (unit, session_dist))
    for f, name in enumerate(base):
        cols[name] = vals[f]
    d = view.dists
    for item, count_field in ITEM_FIELDS.items():
        if item in view.fields and count_field in base:
            guide, goff = d.guide()
            cnt = cols[count_field].astype(np.int64)
            item_off = np.zeros(n + 1, np.int64)
            np.cumsum(cnt, out=item_off[1:])
            out = np.empty(int(item_off[-1]), np.float64)
            idist = u.dist[unit, view.field_index(item)]
            if len(out):
                kr = (perm - offsets[unit]).astype(np.uint64)
                kern.fill_items(seed, u.client[unit], u.window[unit], kr, cnt, idist, item_off,
                                view.field_index(item), d.values, d.cdf, d.offsets, guide, goff, out)
            cols[item] = (item_off, out)
    return cols
