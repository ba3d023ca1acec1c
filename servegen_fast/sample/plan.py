"""Planning a trace: chunks of windows under a memory budget, the units (active client windows)
of a chunk, their request counts under ServeGen's rule, and renewal-law parameters."""
from __future__ import annotations

import numpy as np

from ..kernels.codes import ROOM_BLOCK
from ..kernels.units import renewal_params as _renewal_params
from ..model.fields import LAW_GAMMA, LAW_WEIBULL
from ..model.pool import ClientPool
from ..model.population import Population
from ..model.special import gammaln
from ..model.units import Units, modulation

DEFAULT_CHUNK_BYTES = 256 << 20
_ROW_BYTES = 96  # working bytes per request in a chunk (arrival, order, fields, Arrow copy)
_UNIT_BYTES = 96  # bytes per (client, window) of a population chunk's parameter arrays


def servegen_counts(rate: np.ndarray, length: np.ndarray) -> np.ndarray:
    """ServeGen's rule: ceil(rate·L) draws, the last on the window end, so max(n − 1, 0) arrivals."""
    return np.maximum(np.ceil(rate * length) - 1, 0).astype(np.int64)


def plan_chunks(view, targets, aggregate, window_range, mode: str, chunk_bytes: int):
    """Consecutive window ranges whose expected request count (and, for a population, whose
    clients × windows) fit the memory budget."""
    w_lo, w_hi = window_range
    if w_hi <= w_lo:
        return
    length = view.window_len.astype(np.float64)
    if mode == "servegen" and not isinstance(view, Population):
        per_window = servegen_counts(targets, view.window_len[None, :]).sum(axis=0).astype(np.float64)
    else:
        per_window = aggregate * length * 1.1 + 16
    budget = max(chunk_bytes // _ROW_BYTES, 1)
    # a population materializes [clients, windows] parameter arrays per chunk (two chunks live)
    max_windows = max(1, chunk_bytes // (2 * _UNIT_BYTES * view.n_clients)) \
        if isinstance(view, Population) else w_hi
    w0, acc = w_lo, 0.0
    for w in range(w_lo, w_hi):
        if w > w0 and (acc + per_window[w] > budget or w - w0 >= max_windows):
            yield w0, w
            w0, acc = w, 0.0
        acc += per_window[w]
    yield w0, w_hi


def renewal_params(law, shape, cv, rate):
    """(shape, scale) of a renewal law with mean 1/rate. Gamma shape = 1/cv² (cv floored at 1e-3).
    Compiled (kernels/units.py) but for the Weibull units' log Γ; equal to renewal_params_numpy."""
    law, rate = np.ascontiguousarray(law, np.int64), np.ascontiguousarray(rate, np.float64)
    k, scale = _renewal_params(law, np.ascontiguousarray(shape, np.float64), np.ascontiguousarray(cv, np.float64),
                               rate)
    wb = np.flatnonzero(law == LAW_WEIBULL)
    if wb.size:
        scale[wb] = 1.0 / (rate[wb] * np.exp(gammaln(1.0 + 1.0 / k[wb])))
    return k, scale


def renewal_params_numpy(law, shape, cv, rate):
    """The NumPy twin of renewal_params (the tests' oracle)."""
    k = np.where(law == LAW_GAMMA, 1.0 / np.maximum(cv, 1e-3) ** 2, np.where(law == LAW_WEIBULL, shape, 1.0))
    mean1 = np.ones_like(k)
    wb = law == LAW_WEIBULL
    mean1[wb] = np.exp(gammaln(1.0 + 1.0 / k[wb]))  # Weibull mean at scale 1
    scale = np.where(law == LAW_GAMMA, 1.0 / (rate * k), 1.0 / (rate * mean1))
    return k, scale


def room_offsets(expected: np.ndarray) -> np.ndarray:
    """Offsets of the rooms the renewal count keeps arrival times in: one per ROOM_BLOCK units,
    1.25 x their expected arrivals + 16 (a block with more is partly drawn again by the fill)."""
    n_blocks = -(-len(expected) // ROOM_BLOCK)
    sums = np.add.reduceat(expected, np.arange(n_blocks) * ROOM_BLOCK) if n_blocks else np.zeros(0)
    off = np.zeros(n_blocks + 1, np.int64)
    np.cumsum((sums * 1.25 + 16).astype(np.int64), out=off[1:])
    return off


def pool_units(view: ClientPool, targets: np.ndarray, w0: int, w1: int) -> Units:
    tgt = targets[:, w0:w1]
    wi, ci = np.nonzero((tgt > 0).T)
    wabs = wi + w0
    return Units(wi=wi, client=view.client_ids[ci].astype(np.uint32), window=view.window_index[wabs].astype(np.uint32),
                 start=view.window_start[wabs].astype(np.float64), length=view.window_len[wabs].astype(np.float64),
                 rate=tgt[ci, wi], law=view.law[ci, wabs].astype(np.int64), shape=view.shape[ci, wabs],
                 cv=view.cv[ci, wabs], dist=view.dist_id[ci, view.length_index[wabs], :].astype(np.int64),
                 mod=modulation(view.mod_sigma, view.mod_tau, ci, wabs))



def chunk_units(view, targets: np.ndarray, w0: int, w1: int) -> Units:
    """Units of windows [w0, w1): `targets` is [C, W] client target rates for a pool, and a
    per-window factor on client rates for a population."""
    if isinstance(view, Population):
        return view.units(w0, w1, targets[w0:w1])
    return pool_units(view, targets, w0, w1)


def window_range(view, only) -> tuple[int, int]:
    if only is None:
        return 0, view.n_windows
    t0, t1 = (int(x) for x in only)
    edges = np.append(view.window_start, view.duration)
    if not (0 <= t0 <= t1 <= view.duration) or t0 not in edges or t1 not in edges:
        raise ValueError(f"only=({t0}, {t1}) must lie on window boundaries within [0, {view.duration}] s")
    return int(np.searchsorted(edges, t0)), int(np.searchsorted(edges, t1))
