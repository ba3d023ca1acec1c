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
equicorrelation rho between the base fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from ..model import rates as _rates
from ..model.pool import LAW_EXPONENTIAL, LAW_GAMMA, LAW_WEIBULL, ClientPool
from ..model.population import Population
from ..model.special import gammaln
from ..io.trace import trace_schema

MODES = ("servegen", "renewal", "poisson")
BACKENDS = ("numpy", "cpu", "cuda")
ITEM_FIELDS = {"image_tokens": "image_count", "audio_tokens": "audio_count", "video_tokens": "video_count"}
DEFAULT_CHUNK_BYTES = 256 << 20
_ROW_BYTES = 96  # working bytes per request in a chunk (arrival, order, fields, Arrow copy)
_UNIT_BYTES = 96  # bytes per (client, window) of a population chunk's parameter arrays


@dataclass(frozen=True)
class GenerateOptions:
    seed: int = 0
    mode: str = "servegen"
    correlation: object = "comonotone"
    backend: str = "cpu"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    include_reason_ratio: bool = False


def load_backend(name: str):
    if name == "numpy":
        from ..kernels import reference as mod
    elif name == "cpu":
        from ..kernels import cpu as mod
    elif name == "cuda":
        try:
            from ..kernels import cuda as mod
        except ImportError as e:
            raise RuntimeError(f"backend 'cuda' is not available: {e}") from None
    else:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    return mod


def _correlation_mode(correlation) -> tuple[int, float]:
    if correlation in (None, "comonotone"):
        return 0, 1.0
    if correlation == "independent":
        return 1, 0.0
    try:
        rho = float(correlation)
    except (TypeError, ValueError):
        raise ValueError(f"correlation must be 'comonotone', 'independent' or a number in [0, 1], "
                         f"got {correlation!r}") from None
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"copula correlation must be in [0, 1], got {rho}")
    return 2, rho


def _validate(pool: ClientPool, duration, start, opts: GenerateOptions) -> tuple[int, int]:
    if not isinstance(pool, (ClientPool, Population)):
        raise TypeError(f"pool must be a ClientPool or a Population, got {type(pool).__name__}")
    if opts.mode not in MODES:
        raise ValueError(f"unknown arrival mode {opts.mode!r}; expected one of {MODES}")
    if opts.backend not in BACKENDS:
        raise ValueError(f"unknown backend {opts.backend!r}; expected one of {BACKENDS}")
    if not (isinstance(opts.seed, (int, np.integer)) and 0 <= opts.seed < 2 ** 64):
        raise ValueError(f"seed must be an integer in [0, 2**64), got {opts.seed!r}")
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
             seed: int = 0, mode: str | None = None, correlation="comonotone", backend: str = "cpu",
             chunk_bytes: int = DEFAULT_CHUNK_BYTES, include_reason_ratio: bool = False,
             metadata: dict | None = None, progress: Callable[[int, float], None] | None = None,
             only: tuple[int, int] | None = None) -> Iterator[pa.RecordBatch]:
    """Yield the trace of `pool` over [start, start + duration) as Arrow record batches in time order.

    `rate` is anything `rates.as_rate_fn` accepts (None: the pool's own rates). Timestamps
    are seconds from `start`. `mode` defaults to ``servegen`` (``renewal`` for a synthesized
    population). `only=(t0, t1)` (seconds from `start`, on window boundaries) yields just
    the rows of [t0, t1), identical to those rows of the whole trace: rates are resolved
    over the whole span and every draw is keyed, so any part can be generated alone.
    `progress(rows_so_far, seconds_done)` is called after each chunk. Arguments are checked
    when this is called, not when the first batch is drawn.
    """
    if mode is None:
        synthetic = isinstance(pool, Population) and (pool.params or {}).get("kind") == "population"
        mode = "renewal" if synthetic else "servegen"
    opts = GenerateOptions(seed, mode, correlation, backend, chunk_bytes, include_reason_ratio)
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
    w_lo, w_hi = _window_range(view, only)
    schema = trace_schema(view.category, view.fields, include_reason_ratio, metadata)
    kern = load_backend(backend)
    return _stream(kern, view, targets, aggregate, (w_lo, w_hi), schema, opts, include_reason_ratio, progress)


def _window_range(view, only) -> tuple[int, int]:
    if only is None:
        return 0, view.n_windows
    t0, t1 = (int(x) for x in only)
    edges = np.append(view.window_start, view.duration)
    if not (0 <= t0 <= t1 <= view.duration) or t0 not in edges or t1 not in edges:
        raise ValueError(f"only=({t0}, {t1}) must lie on window boundaries within [0, {view.duration}] s")
    return int(np.searchsorted(edges, t0)), int(np.searchsorted(edges, t1))


def _stream(kern, view, targets, aggregate, window_range, schema, opts, include_reason_ratio,
            progress) -> Iterator[pa.RecordBatch]:
    """Chunks in order. Each chunk is submitted before the previous one is emitted, so with
    the cuda backend the GPU (and the copy back) works on chunk k+1 while the caller encodes
    and writes chunk k; the other backends compute a chunk when it is read out."""
    done_rows = 0
    pending = None
    for span in [*_plan_chunks(view, targets, aggregate, window_range, opts), None]:
        job = None
        if span is not None:
            w0, w1 = span
            units = view.units(w0, w1, targets[w0:w1]) if isinstance(view, Population) else \
                pool_units(view, targets, w0, w1)
            job = (_submit_chunk(kern, view, units, w1 - w0, opts), w1)
        if pending is not None:
            submitted, end = pending
            cols = _finish_chunk(kern, view, opts, *submitted)
            batch = _to_batch(cols, view, schema, include_reason_ratio)
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
                          kwargs.get("metadata"))
    batches = list(stream)
    return pa.Table.from_batches(batches, schema=schema)


# --------------------------------------------------------------------------- planning
def _servegen_counts(rate: np.ndarray, length: np.ndarray) -> np.ndarray:
    """ServeGen's rule: ceil(rate·L) draws, the last on the window end, so max(n − 1, 0) arrivals."""
    return np.maximum(np.ceil(rate * length) - 1, 0).astype(np.int64)


def _plan_chunks(view, targets, aggregate, window_range, opts: GenerateOptions):
    """Consecutive window ranges whose expected request count (and, for a population, whose
    clients × windows) fit the memory budget."""
    w_lo, w_hi = window_range
    if w_hi <= w_lo:
        return
    length = view.window_len.astype(np.float64)
    if opts.mode == "servegen" and not isinstance(view, Population):
        per_window = _servegen_counts(targets, view.window_len[None, :]).sum(axis=0).astype(np.float64)
    else:
        per_window = aggregate * length * 1.1 + 16
    budget = max(opts.chunk_bytes // _ROW_BYTES, 1)
    # a population materializes [clients, windows] parameter arrays per chunk (two chunks live)
    max_windows = max(1, opts.chunk_bytes // (2 * _UNIT_BYTES * view.n_clients)) \
        if isinstance(view, Population) else w_hi
    w0, acc = w_lo, 0.0
    for w in range(w_lo, w_hi):
        if w > w0 and (acc + per_window[w] > budget or w - w0 >= max_windows):
            yield w0, w
            w0, acc = w, 0.0
        acc += per_window[w]
    yield w0, w_hi


def renewal_params(law, shape, cv, rate):
    """(shape, scale) of a renewal law with mean 1/rate. Gamma shape = 1/cv² (cv floored at 1e-3)."""
    k = np.where(law == LAW_GAMMA, 1.0 / np.maximum(cv, 1e-3) ** 2, np.where(law == LAW_WEIBULL, shape, 1.0))
    mean1 = np.ones_like(k)
    wb = law == LAW_WEIBULL
    mean1[wb] = np.exp(gammaln(1.0 + 1.0 / k[wb]))  # Weibull mean at scale 1
    scale = np.where(law == LAW_GAMMA, 1.0 / (rate * k), 1.0 / (rate * mean1))
    return k, scale


@dataclass
class Units:
    """The (client, window) units of one chunk with a positive target, window-major (all
    clients of the chunk's first window, then the next...). `wi` is the window within the
    chunk; `dist` holds every field's distribution id, in the pool's field order."""
    wi: np.ndarray       # int64[U]
    client: np.ndarray   # uint32[U] client id (keys the RNG)
    window: np.ndarray   # uint32[U] window index (keys the RNG)
    start: np.ndarray    # float64[U] window start, seconds from the view start
    length: np.ndarray   # float64[U]
    rate: np.ndarray     # float64[U] target rate
    law: np.ndarray      # int64[U]
    shape: np.ndarray    # float64[U]
    cv: np.ndarray       # float64[U]
    dist: np.ndarray     # int64[U, F]


def pool_units(view: ClientPool, targets: np.ndarray, w0: int, w1: int) -> Units:
    tgt = targets[:, w0:w1]
    wi, ci = np.nonzero((tgt > 0).T)
    wabs = wi + w0
    return Units(wi=wi, client=view.client_ids[ci].astype(np.uint32), window=view.window_index[wabs].astype(np.uint32),
                 start=view.window_start[wabs].astype(np.float64), length=view.window_len[wabs].astype(np.float64),
                 rate=tgt[ci, wi], law=view.law[ci, wabs].astype(np.int64), shape=view.shape[ci, wabs],
                 cv=view.cv[ci, wabs], dist=view.dist_id[ci, view.length_index[wabs], :].astype(np.int64))


def _submit_chunk(kern, view, u: Units, n_windows: int, opts: GenerateOptions):
    """Start the backend on a chunk's units; see _finish_chunk."""
    seed = np.uint64(opts.seed)
    law = u.law
    if opts.mode == "servegen":
        k = u.shape.astype(np.float64)
        scale = np.ones_like(k)
        counts = _servegen_counts(u.rate, u.length)
    else:
        if opts.mode == "poisson":
            law = np.full_like(law, LAW_EXPONENTIAL)
        k, scale = renewal_params(law, u.shape, u.cv, u.rate)
        counts = kern.count_renewal(seed, u.client, u.window, u.length, law, k, scale) if len(law) else \
            np.zeros(0, np.int64)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    n = int(offsets[-1])
    base = [f for f in view.fields if f not in ITEM_FIELDS]
    corr_mode, rho = _correlation_mode(opts.correlation)
    dist = np.ascontiguousarray(u.dist[:, [view.field_index(f) for f in base]])
    if n and (dist < 0).any():
        bad = np.argwhere(dist < 0)[0]
        raise ValueError(f"client {int(u.client[bad[0]])} has no {base[bad[1]]} distribution for the window at "
                         f"{int(u.start[bad[0]])} s of the view")
    d = view.dists
    guide, goff = d.guide()
    want_units = any(item in view.fields for item in ITEM_FIELDS)
    # windows are disjoint in time: order within each window, windows in sequence
    first_unit = np.searchsorted(u.wi, np.arange(n_windows + 1))
    args = (0 if opts.mode == "servegen" else 1, seed, u.client, u.window, u.start, u.length, law, k, scale, offsets,
            first_unit, corr_mode, rho, dist, (d.values, d.cdf, d.offsets, guide, goff), want_units)
    job = kern.submit_ordered(*args) if hasattr(kern, "submit_ordered") else _Deferred(kern, args)
    return job, (seed, u, offsets, base)


class _Deferred:
    """A synchronous backend's chunk, computed when read out (so one chunk is in memory at a time)."""

    def __init__(self, kern, args):
        self._kern, self._args = kern, args

    def result(self):
        return _ordered_rows(self._kern, *self._args)


def _ordered_rows(kern, mode, seed, client, window, start, length, law, k, scale, offsets, first_unit, corr_mode,
                  rho, dist, tables, want_units):
    """(timestamps, client ids, base values [F, N], perm, unit of each row) of a chunk in time order."""
    n = int(offsets[-1])
    out_t = np.empty(n, np.float64)
    if n:
        kern.fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t)
    perm = kern.window_order(out_t, offsets, first_unit) if n else np.zeros(0, np.int64)
    slot_unit = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    vals = np.empty((n, dist.shape[1]), np.float64)
    if n:
        kern.fill_base(corr_mode, rho, seed, offsets, client, window, dist, *tables, vals)
    ts, cid, vals = kern.gather_rows(perm, slot_unit, client, out_t, vals)
    return ts, cid, vals, perm, (slot_unit[perm] if want_units else None)


def _finish_chunk(kern, view, opts: GenerateOptions, job, ctx) -> dict:
    """Columns of a submitted chunk, with the multimodal item lists drawn for its rows."""
    seed, u, offsets, base = ctx
    ts, cid, vals, perm, unit = job.result()
    n = len(ts)
    cols = {"timestamp": ts, "client_id": cid}
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


def _to_batch(cols: dict, view: ClientPool, schema: pa.Schema, include_reason_ratio: bool) -> pa.RecordBatch:
    arrays = {}
    u32 = lambda x: x.astype(np.uint32)  # noqa: E731 - lengths are integral floats: exact
    for name in schema.names:
        if name == "timestamp":
            arrays[name] = pa.array(cols["timestamp"], pa.float64())
        elif name == "client_id":
            arrays[name] = pa.array(cols["client_id"], pa.uint32())
        elif name in ITEM_FIELDS:
            off, vals = cols[name]
            # int32 offsets: a chunk's item count stays far below 2**31 under the memory budget
            arrays[name] = pa.ListArray.from_arrays(pa.array(off.astype(np.int32), pa.int32()),
                                                    pa.array(u32(vals), pa.uint32()))
        elif name == "input_tokens" and view.category == "multimodal":
            total = cols["text_tokens"].copy()
            for item in ITEM_FIELDS:
                if item in cols:
                    off, vals = cols[item]
                    sums = np.zeros(len(off) - 1)
                    if len(vals):
                        csum = np.concatenate(([0.0], np.cumsum(vals)))
                        sums = csum[off[1:]] - csum[off[:-1]]
                    total = total + sums
            arrays[name] = pa.array(u32(total), pa.uint32())
        elif name == "reasoning_tokens":
            out = cols["output_tokens"]
            # round half up, never above the output length
            arrays[name] = pa.array(u32(np.minimum(np.floor(cols["reason_ratio"] * out + 0.5), out)), pa.uint32())
        elif name == "reason_ratio":
            arrays[name] = pa.array(cols["reason_ratio"], pa.float64())
        else:
            arrays[name] = pa.array(u32(cols[name]), pa.uint32())
    return pa.RecordBatch.from_arrays([arrays[n] for n in schema.names], schema=schema)
