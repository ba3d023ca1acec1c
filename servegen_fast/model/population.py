"""Fleet-scale client populations and horizon extension.

A `Population` is N synthetic clients drawn from a source pool, kept as O(N) small arrays:
each client copies the time profile, arrival laws and length distributions of one source
client (`src`), multiplied by a rate factor (`mult`), shifted in time by whole windows
(`shift`), with a jittered burstiness (`cv_factor`). Nothing per (client, window) exists
until the generator asks for one chunk's `units(w0, w1, factor)` (the active pairs only; or
`materialize(w0, w1)`, a ClientPool of a few windows), so a million clients over a month fit
in memory; length distributions are the source's (referenced by id, never copied).

Horizons longer than the source repeat it in whole weeks (sources of 7 days or more) or
whole days, so windows, days and weeks stay aligned; an optional day-to-day variation
(a log-normal factor per day) and growth trend (compounding per day) multiply every rate.

Every random parameter is a keyed Philox draw of (seed, client index, parameter), so client
i is the same whatever N or shard is built, and nothing touches global RNG state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..kernels import philox as px
from ..kernels.units import population_units
from .fields import LAW_GAMMA, LAW_IDLE, LAW_WEIBULL
from .pool import ClientPool
from .units import Units, modulation

DAY = 86400
_POP_WINDOW = 0xFFFFFFFF  # counter word of population draws: never a real window index
_DAY_CLIENT = 0xFFFFFFFF  # client word of the per-day draws
# parameter index of each keyed draw (field FIELD_POPULATION)
_P_SRC, _P_MULT, _P_SHIFT, _P_CV, _P_DAY = 0, 1, 2, 3, 4


@dataclass(frozen=True, eq=False)
class Population:
    """N clients defined from a source pool (see the module docstring); a view of windows
    [first_window, first_window + n_windows) of its horizon."""
    source: ClientPool
    src: np.ndarray          # int32[N]   source client index
    mult: np.ndarray         # float64[N] rate multiplier over the source client's rates
    shift: np.ndarray        # int32[N]   time shift in windows (the client runs `shift` windows ahead)
    cv_factor: np.ndarray    # float64[N] burstiness jitter (1 = the source's CV)
    client_ids: np.ndarray   # int64[N]
    horizon_windows: int     # windows in the whole horizon
    day_factor: np.ndarray   # float64[days] rate factor per day of the horizon
    first_window: int = 0
    n_windows_: int | None = None
    model: str = ""
    params: dict | None = None  # how it was made (for trace metadata)

    # -------------------------------------------------------------- pool-like surface
    @property
    def category(self) -> str:
        return self.source.category

    @property
    def fields(self) -> tuple:
        return self.source.fields

    @property
    def dists(self):
        return self.source.dists

    @property
    def window_size(self) -> int:
        return self.source.window_size

    @property
    def length_window_size(self) -> int:
        return self.source.length_window_size

    @property
    def n_clients(self) -> int:
        return len(self.src)

    def field_index(self, name: str) -> int:
        return self.source.field_index(name)

    @property
    def n_windows(self) -> int:
        return self.horizon_windows - self.first_window if self.n_windows_ is None else self.n_windows_

    @property
    def window_index(self) -> np.ndarray:
        return np.arange(self.first_window, self.first_window + self.n_windows, dtype=np.int64)

    @property
    def window_start(self) -> np.ndarray:
        return (self.window_index - self.first_window) * self.window_size

    @property
    def window_len(self) -> np.ndarray:
        return np.full(self.n_windows, self.window_size, np.int64)

    @property
    def origin(self) -> int:
        return self.first_window * self.window_size

    @property
    def duration(self) -> int:
        return self.n_windows * self.window_size

    def span(self, start: int, end: int) -> "Population":
        """Windows [start, end) of this view, re-based to 0; both ends on window boundaries."""
        start, end = int(start), int(end)
        ws = self.window_size
        if start % ws or end % ws:
            raise ValueError(f"a population's span must start and end on {ws}-s window boundaries, "
                             f"got [{start}, {end})")
        if not 0 <= start <= end:
            raise ValueError(f"invalid span [{start}, {end})")
        end = min(end, self.duration)
        start = min(start, end)
        return replace(self, first_window=self.first_window + start // ws, n_windows_=(end - start) // ws)

    # -------------------------------------------------------------- the mapping
    def _source_window(self, w: np.ndarray) -> np.ndarray:
        """Source window for absolute horizon window(s) `w` (any integers: wraps whole periods)."""
        return np.mod(w, _period_windows(self.source))

    def _day_of(self, w: np.ndarray) -> np.ndarray:
        return np.clip(w // (DAY // self.window_size), 0, len(self.day_factor) - 1)

    def aggregate_rate(self) -> np.ndarray:
        """float64[W]: the sum of all clients' rates per window, computed per (source client, shift)
        group, so it costs O(groups × W), not O(N × W)."""
        s = self.source
        own = np.where(s.active, s.rate, 0.0)
        span = int(self.shift.max(initial=0) - self.shift.min(initial=0)) + 1
        key = self.src.astype(np.int64) * span + (self.shift - self.shift.min(initial=0))
        groups, inv = np.unique(key, return_inverse=True)
        weight = np.bincount(inv, weights=self.mult, minlength=len(groups))
        g_src = groups // span
        g_shift = groups % span + self.shift.min(initial=0)
        w = self.window_index
        out = np.zeros(self.n_windows)
        step = max(1, (1 << 22) // max(len(groups), 1))
        for a in range(0, len(w), step):
            ww = w[a:a + step]
            sw = self._source_window(ww[None, :] + g_shift[:, None])
            out[a:a + step] = (weight[:, None] * own[g_src[:, None], sw]).sum(axis=0)
        return out * self.day_factor[self._day_of(w)]

    def materialize(self, w0: int, w1: int) -> ClientPool:
        """The ClientPool of windows [w0, w1) of this view: every client, with window_start
        relative to the view's start and window_index = the horizon window (keys the RNG).
        Each arrival window gets its own length-window slot, since shifted clients cross
        length windows at different times."""
        s = self.source
        w = self.window_index[w0:w1]
        sw = self._source_window(w[None, :] + self.shift[:, None])  # [N, Wc]
        src = self.src[:, None]
        law = s.law[src, sw]
        factor = self.mult[:, None] * self.day_factor[self._day_of(w)][None, :]
        rate = np.where(law != LAW_IDLE, s.rate[src, sw] * factor, 0.0)
        j = self.cv_factor[:, None]
        cv = s.cv[src, sw] * j
        shape = s.shape[src, sw]
        shape = np.where(law == LAW_GAMMA, shape / (j * j), np.where(law == LAW_WEIBULL, shape / j, shape))
        dist_id = s.dist_id[src, s.length_index[sw], :]  # [N, Wc, F]
        return ClientPool(
            category=s.category, model=self.model or s.model, client_ids=self.client_ids,
            window_start=self.window_start[w0:w1], window_len=self.window_len[w0:w1], window_index=w,
            length_index=np.arange(len(w), dtype=np.int32), rate=rate, cv=cv, law=law, shape=shape,
            scale=s.scale[src, sw] / factor, fields=s.fields, dist_id=dist_id, dists=s.dists,
            window_size=s.window_size, length_window_size=s.length_window_size, origin=self.origin)

    def units(self, w0: int, w1: int, factor: np.ndarray):
        """The units (model.units.Units) of windows [w0, w1): the active (client,
        window) pairs only, window-major, with target rate = client rate × `factor[window]`.
        Only a [N, windows] index and mask are dense; every parameter is gathered for the
        active pairs alone (about a quarter of them in ServeGen's language pools)."""
        return _units(self, w0, w1, factor)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.src, self.mult, self.shift, self.cv_factor, self.client_ids))


def _units(pop: Population, w0: int, w1: int, factor: np.ndarray) -> Units:
    """The compiled planner (kernels/units.py): one pass over clients per window, no dense
    [N, windows] arrays; identical to `_units_numpy`. For a modulated source (a fitted pool whose
    windows carry an intra-window modulation) it also returns each unit's source (client,
    window), which gathers the modulation parameters."""
    s = pop.source
    modulated = s.mod_sigma is not None and bool((s.mod_sigma > 0).any())
    w = pop.window_index[w0:w1]
    day = pop.day_factor[pop._day_of(w)] * np.asarray(factor, np.float64)
    wi, client, window, start, length, rate, law, shape, cv, dist, sa, swa = population_units(
        pop.src, pop.shift, pop.mult, pop.cv_factor, pop.client_ids, w,
        pop.window_start[w0:w1].astype(np.float64), pop.window_len[w0:w1].astype(np.float64), day,
        _period_windows(s), *_by_window(s), s.length_index, s.dist_id, modulated)
    return Units(wi=wi, client=client, window=window, start=start, length=length, rate=rate, law=law, shape=shape,
                 cv=cv, dist=dist, mod=modulation(s.mod_sigma, s.mod_tau, sa, swa) if modulated else None)


def _by_window(s: ClientPool) -> tuple:
    """The source's active, law, shape, cv and rate as C-contiguous [window, client] arrays,
    made once per source pool (a few MB)."""
    key = (id(s), id(s.rate))
    if _BY_WINDOW.get("key") != key:
        _BY_WINDOW.update(key=key, arrays=tuple(np.ascontiguousarray(a.T) for a in
                                                (s.active, s.law, s.shape, s.cv, s.rate)))
    return _BY_WINDOW["arrays"]


_BY_WINDOW: dict = {}


def _units_numpy(pop: Population, w0: int, w1: int, factor: np.ndarray) -> Units:
    """The NumPy twin of `_units` (the tests' oracle)."""
    s = pop.source
    w = pop.window_index[w0:w1]
    sw = pop._source_window(w[None, :] + pop.shift[:, None])  # [N, Wc]
    day = pop.day_factor[pop._day_of(w)] * np.asarray(factor, np.float64)
    act = s.active[pop.src[:, None], sw] & (day > 0)[None, :]
    wi, ci = np.nonzero(act.T)
    sa = pop.src[ci]
    swa = sw[ci, wi]
    j = pop.cv_factor[ci]
    law = s.law[sa, swa].astype(np.int64)
    shape = s.shape[sa, swa]
    shape = np.where(law == LAW_GAMMA, shape / (j * j), np.where(law == LAW_WEIBULL, shape / j, shape))
    return Units(wi=wi, client=pop.client_ids[ci].astype(np.uint32), window=w[wi].astype(np.uint32),
                 start=pop.window_start[w0:w1][wi].astype(np.float64),
                 length=pop.window_len[w0:w1][wi].astype(np.float64),
                 rate=s.rate[sa, swa] * pop.mult[ci] * day[wi], law=law, shape=shape, cv=s.cv[sa, swa] * j,
                 dist=s.dist_id[sa, s.length_index[swa], :].astype(np.int64),
                 mod=modulation(s.mod_sigma, s.mod_tau, sa, swa))


# --------------------------------------------------------------------------- construction
def _check_source(source: ClientPool) -> None:
    if not isinstance(source, ClientPool):
        raise TypeError(f"source must be a ClientPool, got {type(source).__name__}")
    ws = source.window_size
    if ws <= 0 or DAY % ws:
        raise ValueError(f"the source's window size ({ws} s) must divide a day")
    if source.origin % DAY or np.any(source.window_len != ws) or \
            np.any(source.window_start != np.arange(source.n_windows) * ws):
        raise ValueError("the source must be whole windows starting at a day boundary (a pool or a span of "
                         "whole days)")
    if source.n_windows < DAY // ws:
        raise ValueError(f"the source covers {source.duration} s; it needs at least one whole day")


def _period_windows(source: ClientPool) -> int:
    """The source's repeat period: whole weeks when it has 7 days or more, else whole days."""
    wpd = DAY // source.window_size
    days = source.n_windows // wpd
    return (days // 7 * 7 if days >= 7 else days) * wpd


def _draw(seed: int, n: int, param: int, kind: str = "uniform") -> np.ndarray:
    fn = px.uniform_np if kind == "uniform" else px.normal_np
    return fn(seed, np.arange(n, dtype=np.uint64), _POP_WINDOW, px.FIELD_POPULATION, param)


def _day_factors(seed: int, days: int, day_sigma: float, growth: float) -> np.ndarray:
    d = np.arange(days)
    f = (1.0 + growth) ** d
    if day_sigma > 0:
        z = px.normal_np(seed, _DAY_CLIENT, d.astype(np.uint64), px.FIELD_POPULATION, _P_DAY)
        f = f * np.exp(day_sigma * z - 0.5 * day_sigma ** 2)
    return f


def _horizon(source: ClientPool, duration: int | None) -> int:
    ws = source.window_size
    duration = source.duration if duration is None else int(duration)
    if duration <= 0 or duration % ws:
        raise ValueError(f"duration must be a positive multiple of the {ws}-s window, got {duration}")
    return duration // ws


def synthesize(source: ClientPool, n_clients: int, *, mean_rate: float | None = None, duration: int | None = None,
               seed: int = 0, rate_sigma: float = 0.25, cv_sigma: float = 0.1, max_shift: int = 3600,
               day_sigma: float = 0.0, growth: float = 0.0, mean_over: tuple[int, int] | None = None) -> Population:
    """N clients from `source`: each copies a source client drawn uniformly (so client rate
    levels follow the source's heavy-tailed distribution), with a log-normal rate jitter
    (`rate_sigma`), a CV jitter (`cv_sigma`) and a time shift of whole windows uniform in
    ±`max_shift` seconds; then all rates are scaled so the mean aggregate rate over the
    horizon (`duration`, default the source's) -- or over the seconds `mean_over` = (t0, t1)
    of it, on window boundaries -- is `mean_rate` (default: the source's mean).
    """
    _check_source(source)
    n = int(n_clients)
    if n <= 0 or n >= 2 ** 32:
        raise ValueError(f"n_clients must be in [1, 2**32), got {n_clients}")
    for name, v in (("rate_sigma", rate_sigma), ("cv_sigma", cv_sigma), ("max_shift", max_shift),
                    ("day_sigma", day_sigma)):
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    if not growth > -1:
        raise ValueError(f"growth must be > -1 (a fraction per day), got {growth}")
    if mean_rate is not None and not (mean_rate > 0 and math.isfinite(mean_rate)):
        raise ValueError(f"mean_rate must be a positive number, got {mean_rate}")
    own = np.where(source.active, source.rate, 0.0)
    alive = np.flatnonzero(own.sum(axis=1) > 0)
    if len(alive) == 0:
        raise ValueError("the source pool has no client with a positive rate")
    horizon = _horizon(source, duration)
    ws = source.window_size
    k = int(max_shift) // ws
    src = alive[np.minimum((_draw(seed, n, _P_SRC) * len(alive)).astype(np.int64), len(alive) - 1)]
    mult = np.exp(rate_sigma * _draw(seed, n, _P_MULT, "normal") - 0.5 * rate_sigma ** 2)
    shift = np.minimum((_draw(seed, n, _P_SHIFT) * (2 * k + 1)).astype(np.int64), 2 * k) - k
    cv_factor = np.exp(cv_sigma * _draw(seed, n, _P_CV, "normal"))
    days = -(-horizon * ws // DAY)
    pop = Population(source=source, src=src.astype(np.int32), mult=mult, shift=shift.astype(np.int32),
                     cv_factor=cv_factor, client_ids=np.arange(n, dtype=np.int64), horizon_windows=horizon,
                     day_factor=_day_factors(seed, days, day_sigma, growth),
                     model=f"{source.model}-x{n}")
    t0, t1 = (0, horizon * ws) if mean_over is None else (int(mean_over[0]), int(mean_over[1]))
    agg = pop.span(t0, t1).aggregate_rate()
    if agg.size == 0 or not agg.mean() > 0:
        raise ValueError(f"the population has no traffic in [{t0}, {t1}) s to scale to mean_rate")
    target = float(own.sum(axis=0).mean()) if mean_rate is None else float(mean_rate)
    pop = replace(pop, mult=mult * (target / agg.mean()))
    params = {"kind": "population", "n_clients": n, "mean_rate": target, "seed": int(seed),
              "rate_sigma": rate_sigma, "cv_sigma": cv_sigma, "max_shift": int(max_shift), "day_sigma": day_sigma,
              "growth": growth, "duration": horizon * ws, "mean_over": [t0, t1]}
    return replace(pop, params=params)


def extend_horizon(source: ClientPool, duration: int, *, day_sigma: float = 0.0, growth: float = 0.0,
                   seed: int = 0) -> Population:
    """The source's own clients over `duration` seconds: the source repeated in whole weeks
    (or days), times the day-to-day variation and growth. The first period is the source
    itself, exactly."""
    _check_source(source)
    if not (day_sigma >= 0 and math.isfinite(day_sigma)) or not growth > -1:
        raise ValueError(f"day_sigma must be >= 0 and growth > -1, got {day_sigma}, {growth}")
    c = source.n_clients
    horizon = _horizon(source, duration)
    days = -(-horizon * source.window_size // DAY)
    params = {"kind": "extend", "duration": horizon * source.window_size, "seed": int(seed), "day_sigma": day_sigma,
              "growth": growth}
    return Population(source=source, src=np.arange(c, dtype=np.int32), mult=np.ones(c), shift=np.zeros(c, np.int32),
                      cv_factor=np.ones(c), client_ids=np.asarray(source.client_ids, np.int64),
                      horizon_windows=horizon, day_factor=_day_factors(seed, days, day_sigma, growth),
                      model=source.model, params=params)
