"""Rate functions: the target aggregate request rate of a workload over time.

A rate function is resolved against a pool view into one target aggregate rate per arrival
window (`per_window`). Each client's target in a window is that aggregate split in
proportion to the clients' own rates in the window (ServeGen's rule); windows where no
client is active produce nothing whatever the target.

Accepted forms (`as_rate_fn`): None (the pool's own rates), a number (constant), a
`RateFn`, a dict {window start (s): rate} as ServeGen's, a sequence or array with one rate
per window, or a callable of time in seconds (evaluated at each window's midpoint).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .pool import ClientPool


class RateFn:
    """Base class: `per_window(pool)` -> float64[W] target aggregate rates (req/s)."""

    def per_window(self, pool: ClientPool) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-able description, stored in trace metadata to regenerate a trace."""
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(RateFn):
    rate: float

    def per_window(self, pool):
        return np.full(pool.n_windows, float(self.rate))

    def describe(self):
        return {"kind": "constant", "rate": self.rate}


@dataclass(frozen=True)
class Scaled(RateFn):
    """The pool's own aggregate rate times `factor` (factor 1: native rates)."""
    factor: float = 1.0

    def per_window(self, pool):
        return pool.aggregate_rate() * float(self.factor)

    def describe(self):
        return {"kind": "scaled", "factor": self.factor}


@dataclass(frozen=True)
class Bounded(RateFn):
    """The pool's own rates, scaled down uniformly so the peak window is at most `peak`."""
    peak: float

    def per_window(self, pool):
        agg = pool.aggregate_rate()
        top = agg.max(initial=0.0)
        return agg * (self.peak / top) if top > self.peak else agg

    def describe(self):
        return {"kind": "bounded", "peak": self.peak}


@dataclass(frozen=True)
class PerWindow(RateFn):
    """Explicit rates, one per window of the (spanned) pool."""
    rates: tuple

    def per_window(self, pool):
        r = np.asarray(self.rates, dtype=np.float64)
        if r.shape != (pool.n_windows,):
            raise ValueError(f"rate function has {r.size} per-window rates but the pool view has "
                             f"{pool.n_windows} windows")
        return r

    def describe(self):
        return {"kind": "per_window", "rates": list(self.rates)}


@dataclass(frozen=True)
class ByTimestamp(RateFn):
    """ServeGen's dict form {window start: rate}.

    As in ServeGen, the keys inside [0, duration) must be exactly the view's window starts;
    keys outside that range are ignored.
    """
    rates: tuple  # ((timestamp, rate), ...)

    def per_window(self, pool):
        got = dict(self.rates)
        want = [int(t) for t in pool.window_start]
        keys = sorted(t for t in got if 0 <= t < (pool.duration if pool.n_windows else 0))
        if keys != want:
            raise ValueError(f"Rate function timestamps don't match pool timestamps. Expected {want}, got {keys}")
        return np.array([got[t] for t in want], dtype=np.float64)

    def describe(self):
        return {"kind": "by_timestamp", "rates": [list(x) for x in self.rates]}


@dataclass(frozen=True)
class Profile(RateFn):
    """Smooth diurnal/weekly profile around a mean rate.

    rate(t) = mean * (1 + daily_amplitude * cos(2π (h - peak_hour) / 24)) * weekly(t), where h
    is the hour of day and weekly(t) is `weekend_factor` on days 5 and 6 of each week (day 0
    = the pool's t = 0) and 1 otherwise, renormalised so a full week averages `mean`.
    """
    mean: float
    daily_amplitude: float = 0.5
    peak_hour: float = 14.0
    weekend_factor: float = 1.0

    def __post_init__(self):
        if not 0 <= self.daily_amplitude <= 1:
            raise ValueError(f"daily_amplitude must be in [0, 1], got {self.daily_amplitude}")
        if self.weekend_factor < 0 or self.mean < 0:
            raise ValueError("mean and weekend_factor must be non-negative")

    def at(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        hours = (t / 3600.0) % 24.0
        day = np.floor(t / 86400.0) % 7
        weekly = np.where(day >= 5, self.weekend_factor, 1.0) / ((5 + 2 * self.weekend_factor) / 7)
        return self.mean * (1 + self.daily_amplitude * np.cos(2 * math.pi * (hours - self.peak_hour) / 24)) * weekly

    def per_window(self, pool):
        mid = pool.origin + pool.window_start + pool.window_len / 2.0
        return self.at(mid)

    def describe(self):
        return {"kind": "profile", "mean": self.mean, "daily_amplitude": self.daily_amplitude,
                "peak_hour": self.peak_hour, "weekend_factor": self.weekend_factor}


@dataclass(frozen=True)
class OfTime(RateFn):
    """Any callable of time (seconds from the view start), evaluated at window midpoints."""
    fn: Callable

    def per_window(self, pool):
        mid = pool.window_start + pool.window_len / 2.0
        r = np.asarray(self.fn(mid), dtype=np.float64)
        return np.broadcast_to(r, mid.shape).copy() if r.ndim == 0 else r

    def describe(self):
        return {"kind": "callable", "name": getattr(self.fn, "__qualname__", repr(self.fn))}


def as_rate_fn(rate) -> RateFn:
    if rate is None:
        return Scaled(1.0)
    if isinstance(rate, RateFn):
        return rate
    if isinstance(rate, (int, float, np.integer, np.floating)) and not isinstance(rate, bool):
        return Constant(float(rate))
    if isinstance(rate, Mapping):
        return ByTimestamp(tuple(sorted((int(k), float(v)) for k, v in rate.items())))
    if callable(rate):
        return OfTime(rate)
    if isinstance(rate, (Sequence, np.ndarray)) and not isinstance(rate, (str, bytes, bytearray)):
        return PerWindow(tuple(float(x) for x in np.asarray(rate, dtype=np.float64).ravel()))
    raise TypeError(f"cannot use {type(rate).__name__} as a rate function; give a number, dict, array, "
                    f"callable or RateFn")


def from_description(desc: dict) -> RateFn:
    """Inverse of `RateFn.describe` (callables cannot be restored)."""
    kind = desc.get("kind")
    if kind == "constant":
        return Constant(desc["rate"])
    if kind == "scaled":
        return Scaled(desc["factor"])
    if kind == "bounded":
        return Bounded(desc["peak"])
    if kind == "per_window":
        return PerWindow(tuple(desc["rates"]))
    if kind == "by_timestamp":
        return ByTimestamp(tuple((int(t), float(r)) for t, r in desc["rates"]))
    if kind == "profile":
        return Profile(desc["mean"], desc["daily_amplitude"], desc["peak_hour"], desc["weekend_factor"])
    raise ValueError(f"cannot restore a rate function of kind {kind!r} from trace metadata")


def check_aggregate(pool, aggregate: np.ndarray) -> None:
    """Per-window target rates must be one finite, non-negative number per window of `pool`."""
    if aggregate.shape != (pool.n_windows,):
        raise ValueError(f"expected {pool.n_windows} per-window rates, got shape {aggregate.shape}")
    bad = ~np.isfinite(aggregate) | (aggregate < 0)
    if bad.any():
        w = int(np.flatnonzero(bad)[0])
        raise ValueError(f"target rate at window starting {int(pool.window_start[w])} s is {aggregate[w]!r}; "
                         f"expected a finite, non-negative number")


def client_targets(pool: ClientPool, aggregate: np.ndarray) -> np.ndarray:
    """float64[C, W]: each client's target rate, the aggregate split in proportion to client rates."""
    aggregate = np.asarray(aggregate, dtype=np.float64)
    check_aggregate(pool, aggregate)
    own = np.where(pool.active, pool.rate, 0.0)
    total = own.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, aggregate / total, 0.0)
    return own * share[None, :]
