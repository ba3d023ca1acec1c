"""ClientPool: the columnar model of a client population.

For C clients and W arrival windows every per-window quantity is one [C, W] array; length
distributions live in a shared, deduplicated `DistTable` and each (client, length window,
field) holds an int32 id into it. There is no Python object per client or per window.

A pool is immutable; `span` and the filters return new pools (views that share the
distribution table). Times are relative to the view's start, as in ServeGen.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .distributions import DistTable
from .filters import LengthFilters, length_stat
from .fields import CATEGORIES, LAW_IDLE


@dataclass(frozen=True, eq=False)
class ClientPool(LengthFilters):
    """Columnar client pool (see module docstring): C clients, W windows, D length windows, F fields."""
    category: str
    model: str
    client_ids: np.ndarray      # int64[C]
    window_start: np.ndarray    # int64[W]: start of each window, seconds from the view start
    window_len: np.ndarray      # int64[W]: its length (edges of a span may be truncated)
    window_index: np.ndarray    # int64[W]: index in the source pool's grid (keys the RNG)
    length_index: np.ndarray    # int32[W]: which length window (axis 1 of dist_id) covers it
    rate: np.ndarray            # float64[C, W] requests/s (0 when idle)
    cv: np.ndarray              # float64[C, W] inter-arrival CV
    law: np.ndarray             # uint8[C, W] LAW_* code
    shape: np.ndarray           # float64[C, W] law shape (Gamma k, Weibull c)
    scale: np.ndarray           # float64[C, W] law scale (seconds)
    fields: tuple               # F field names
    dist_id: np.ndarray         # int32[C, D, F] ids into `dists`, NO_DIST where absent
    dists: DistTable
    window_size: int = 600              # nominal arrival window (s)
    length_window_size: int = 21600     # nominal length window (s)
    origin: int = 0                     # absolute time of this view's t = 0 in the source pool
    present: np.ndarray | None = None   # bool[C, W]: False where a filter removed the window
    mod_sigma: np.ndarray | None = None  # float64[C, W] intra-window modulation sigma (None, 0: plain windows)
    mod_tau: np.ndarray | None = None    # float64[C, W] its segment length (s); kernels/modulation.py
    length_correlation: float | None = None  # Gaussian-copula rho of the base fields; None: comonotone
    clock_step: float | None = None      # a fitted log's clock step (s): timestamps are floored to it

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {self.category!r}")
        c, w = len(self.client_ids), len(self.window_start)
        for name in ("rate", "cv", "law", "shape", "scale"):
            a = getattr(self, name)
            if a.shape != (c, w):
                raise ValueError(f"ClientPool.{name} has shape {a.shape}, expected ({c}, {w})")
        if self.dist_id.ndim != 3 or self.dist_id.shape[0] != c or self.dist_id.shape[2] != len(self.fields):
            raise ValueError(f"ClientPool.dist_id has shape {self.dist_id.shape}, expected "
                             f"({c}, D, {len(self.fields)})")
        for name in ("window_len", "window_index", "length_index"):
            if len(getattr(self, name)) != w:
                raise ValueError(f"ClientPool.{name} must have {w} entries")
        _check_optional(self, c, w)

    # ----------------------------------------------------------------- shape
    @property
    def n_clients(self) -> int:
        return len(self.client_ids)

    @property
    def n_windows(self) -> int:
        return len(self.window_start)

    @property
    def duration(self) -> int:
        """Seconds covered by this view's windows."""
        if self.n_windows == 0:
            return 0
        return int(self.window_start[-1] + self.window_len[-1])

    @property
    def active(self) -> np.ndarray:
        """bool[C, W]: windows that produce requests (not idle, not filtered out)."""
        act = (self.law != LAW_IDLE) & (self.rate > 0)
        if self.present is not None:
            act &= self.present
        return act

    def field_index(self, name: str) -> int:
        try:
            return self.fields.index(name)
        except ValueError:
            raise KeyError(f"pool {self.model!r} has no field {name!r}; it has {list(self.fields)}") from None

    def window_dist_id(self, name: str) -> np.ndarray:
        """int32[C, W]: distribution id of field `name` in each arrival window."""
        return self.dist_id[:, self.length_index, self.field_index(name)]

    def replace(self, **changes) -> "ClientPool":
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------- views
    def span(self, start: int, end: int) -> "ClientPool":
        """Windows overlapping [start, end) of this view, truncated at the edges, re-based to 0.

        Unlike ServeGen, whose last window is open-ended, a span past the pool's end stops
        at the end of the last window.
        """
        start, end = int(start), int(end)
        if end < start:
            raise ValueError(f"span end ({end}) must not be before its start ({start})")
        w_end = self.window_start + self.window_len
        # non-empty overlap only: an empty span [s, s) keeps no (zero-length) window
        keep = np.minimum(w_end, end) > np.maximum(self.window_start, start)
        lo = np.maximum(self.window_start[keep], start)
        hi = np.minimum(w_end[keep], end)
        return self.replace(
            window_start=(lo - start).astype(np.int64),
            window_len=(hi - lo).astype(np.int64),
            window_index=self.window_index[keep],
            length_index=self.length_index[keep],
            rate=self.rate[:, keep], cv=self.cv[:, keep], law=self.law[:, keep],
            shape=self.shape[:, keep], scale=self.scale[:, keep],
            **_optional(self, lambda a: a[:, keep]),
            origin=self.origin + start,
        )._drop_inactive_clients()

    def select_clients(self, mask_or_index) -> "ClientPool":
        """Keep the clients given by a boolean mask or an index array."""
        sel = np.asarray(mask_or_index)
        return self.replace(
            client_ids=self.client_ids[sel], rate=self.rate[sel], cv=self.cv[sel],
            law=self.law[sel], shape=self.shape[sel], scale=self.scale[sel],
            dist_id=self.dist_id[sel], **_optional(self, lambda a: a[sel]),
        )

    def _drop_inactive_clients(self) -> "ClientPool":
        # ServeGen's view keeps a client only if some remaining window has a rate.
        keep = self.active.any(axis=1)
        return self if keep.all() else self.select_clients(keep)

    def filter(self, predicate: Callable[["ClientPool"], np.ndarray]) -> "ClientPool":
        """Keep the windows where `predicate(pool)` is True.

        The predicate is vectorised: it receives this pool and returns a bool array of shape
        [C, W] (or [C] for whole clients, or [W] for whole windows). Clients left with no
        active window are dropped, as in ServeGen.
        """
        mask = np.asarray(predicate(self), dtype=bool)
        c, w = self.n_clients, self.n_windows
        if mask.shape == (c,):
            mask = np.repeat(mask[:, None], w, axis=1)
        elif mask.shape == (w,) and w != c:
            mask = np.repeat(mask[None, :], c, axis=0)
        elif mask.shape != (c, w):
            raise ValueError(f"filter predicate returned shape {mask.shape}; expected ({c}, {w}), ({c},) or ({w},)")
        present = mask if self.present is None else (self.present & mask)
        return self.replace(present=present)._drop_inactive_clients()

    # ----------------------------------------------------------------- aggregates
    def aggregate_rate(self) -> np.ndarray:
        """float64[W]: sum of client rates per window (idle and filtered windows count 0)."""
        return np.where(self.active, self.rate, 0.0).sum(axis=0)

    def cdfs(self) -> dict:
        """Distributions across clients per window, as ServeGen's `get_cdfs` gives them.

        Returns {"rate": {ts: (values, probs)}, "cv": {...}, field: {"avg"|"p50"|"p95"|"p99":
        {ts: (values, probs)}}}. Rate is unweighted; CV and the length statistics are
        weighted by client rate (windows without a rate weigh 0).
        """
        return _pool_cdfs(self)


def _check_optional(pool: ClientPool, c: int, w: int) -> None:
    for name in ("present", "mod_sigma", "mod_tau"):
        a = getattr(pool, name)
        if a is not None and a.shape != (c, w):
            raise ValueError(f"ClientPool.{name} has shape {a.shape}, expected ({c}, {w})")
    if (pool.mod_sigma is None) != (pool.mod_tau is None):
        raise ValueError("ClientPool.mod_sigma and mod_tau come together")


def _optional(pool: ClientPool, take) -> dict:
    """The optional [C, W] arrays (present, modulation) sliced by `take`, None kept None."""
    return {n: (None if getattr(pool, n) is None else take(getattr(pool, n)))
            for n in ("present", "mod_sigma", "mod_tau")}


def _pool_cdfs(pool: ClientPool) -> dict:
        if pool.n_clients == 0 or pool.n_windows == 0:
            return {}
        present = np.ones(pool.rate.shape, bool) if pool.present is None else pool.present
        present = present & pool.active.any(axis=1)[:, None]  # ServeGen skips idle clients
        has_rate = present & (pool.law != LAW_IDLE)
        weight = np.where(has_rate, pool.rate, 0.0)
        ts = pool.window_start
        out: dict = {"rate": _window_cdfs(pool.rate, has_rate, None, ts),
                     "cv": _window_cdfs(pool.cv, has_rate, weight, ts)}
        for name in pool.fields:
            ids = pool.window_dist_id(name)
            with_dist = present & (ids >= 0)
            if not with_dist.any():
                continue
            out[name] = {stat: _window_cdfs(length_stat(pool, name, stat), with_dist, weight, ts)
                         for stat in ("avg", "p50", "p95", "p99")}
        return out


def _window_cdfs(values: np.ndarray, mask: np.ndarray, weight: np.ndarray | None,
                 timestamps: np.ndarray) -> dict:
    """Per-window (column) CDF of values[mask], optionally weighted, in one vectorised pass.

    Each column's entries are sorted by (value, weight) as ServeGen sorts its pairs.
    """
    col = np.broadcast_to(np.arange(values.shape[1]), values.shape)[mask]
    v = values[mask]
    w = np.ones_like(v) if weight is None else weight[mask]
    order = np.lexsort((w, v, col))
    col, v, w = col[order], v[order], w[order]
    counts = np.bincount(col, minlength=values.shape[1])
    bounds = np.concatenate(([0], np.cumsum(counts)))
    if weight is None:
        # ServeGen's unweighted CDF: k/n for the k-th smallest value.
        rank = np.arange(len(v)) - np.repeat(bounds[:-1], counts) + 1
        probs = rank / np.repeat(np.maximum(counts, 1), counts)
    else:
        total = np.bincount(col, weights=w, minlength=values.shape[1])
        # normalise first, as ServeGen does; an all-zero column (skipped below) gets 0, not
        # NaN, so it cannot poison the running sum of the columns after it
        rep = np.repeat(total, counts)
        wn = np.divide(w, rep, out=np.zeros_like(w), where=rep > 0)
        csum = np.cumsum(wn)
        probs = csum - np.repeat(np.concatenate(([0.0], csum))[bounds[:-1]], counts)
    result = {}
    for j in np.flatnonzero(counts):
        if weight is not None and total[j] == 0:
            continue  # ServeGen returns nothing for an all-zero weight set
        lo, hi = bounds[j], bounds[j + 1]
        result[int(timestamps[j])] = (v[lo:hi], probs[lo:hi])
    return result


def regular_grid(n_windows: int, window_size: int, length_window_size: int):
    """(window_start, window_len, window_index, length_index) of an unspanned pool."""
    idx = np.arange(n_windows, dtype=np.int64)
    return (idx * window_size, np.full(n_windows, window_size, dtype=np.int64), idx,
            ((idx * window_size) // length_window_size).astype(np.int32))
