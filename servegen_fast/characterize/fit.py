"""Fit a client pool to a request log (see docs/fit-analyze.md for every rule stated here).

Clients are the distinct values of a key (one or more columns; none: the whole log is one
client). Time is cut into arrival windows (600 s) and length windows (21,600 s) from the log's
first request; the last window ends just past the last request, so a generated trace covers the
log's span and no more.

Per client and arrival window with m requests:
  rate  = m / window length (ServeGen's convention).
  law   = the best of Exponential, Gamma, Weibull by AIC over maximum-likelihood fits of the
          window's m − 1 inter-arrival times, when m >= `min_requests`.
  cv    = the empirical CV of those inter-arrival times.
  shape = `shape_rule` "moments" (default): the chosen law with that CV (Gamma 1/cv², Weibull by
          inversion), so every arrival mode reproduces the CV; "mle": the MLE shape, and cv is
          set to the law's own CV so that the modes agree.
Sparse windows (0 < m < `min_requests`) keep their rate and borrow law and CV from the client's
pooled inter-arrival times (each scaled by its window's rate), else from the whole log's,
else Exponential. Windows without requests are idle.

Per client and length window: the empirical distribution of each length, exact when it has at
most `length_points` distinct values, else `length_points` equally weighted order statistics
from the minimum to the maximum (CDF error at most 1/length_points). Windows with fewer than
`min_length_samples` requests use the client's whole-log distribution, else the log's in that
length window, else the whole log's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import laws as L
from ..model.distributions import DistTableBuilder
from ..model.fields import LAW_IDLE, LAW_NAMES
from ..model.pool import ClientPool
from ..io.sources import RequestLog
from .analyze import spearman
from .modulation import coarse_clock, fit_modulation, spread_ticks

SHAPE_RULES = ("moments", "mle")
FIELDS = ("input_tokens", "output_tokens")
# how a window got its law, in FitResult.level
LEVEL_IDLE, LEVEL_WINDOW, LEVEL_CLIENT, LEVEL_LOG, LEVEL_DEFAULT = 0, 1, 2, 3, 4
LEVEL_NAMES = {LEVEL_IDLE: "idle", LEVEL_WINDOW: "own window", LEVEL_CLIENT: "client's pooled IATs",
               LEVEL_LOG: "whole log's pooled IATs", LEVEL_DEFAULT: "Exponential (too few IATs anywhere)"}
MIN_TIE_FLOOR = 1e-6  # s: ties in a log with a continuous clock


@dataclass(frozen=True)
class FitOptions:
    window: int = 600
    length_window: int = 21600
    min_requests: int = 10
    min_length_samples: int = 20
    length_points: int = 256
    shape_rule: str = "moments"
    modulation: bool = True      # fit the intra-window modulation per client (characterize/modulation.py)
    ks_threshold: float = 0.1    # a window's chosen law "does not fit" above this KS distance (reported)

    def validate(self) -> None:
        for name in ("window", "length_window", "length_points", "min_length_samples"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive whole number, got {v!r}")
        if self.length_window % self.window:
            raise ValueError(f"length_window ({self.length_window} s) must be a multiple of window ({self.window} s)")
        if not isinstance(self.min_requests, (int, np.integer)) or self.min_requests < 3:
            raise ValueError(f"min_requests must be at least 3 (two inter-arrival times), got {self.min_requests!r}")
        if self.length_points < 2:
            raise ValueError(f"length_points must be at least 2, got {self.length_points}")
        if self.shape_rule not in SHAPE_RULES:
            raise ValueError(f"shape_rule must be one of {SHAPE_RULES}, got {self.shape_rule!r}")
        if not 0.0 < self.ks_threshold <= 1.0:
            raise ValueError(f"ks_threshold must be in (0, 1], got {self.ks_threshold!r}")


@dataclass
class FitResult:
    pool: ClientPool
    labels: list            # the client key's value for each pool client
    count: np.ndarray       # int64[C, W] requests per window
    ks: np.ndarray          # float64[C, W] KS distance of the stored law (NaN: idle or borrowed)
    level: np.ndarray       # uint8[C, W] LEVEL_*
    log: RequestLog
    client_key: tuple
    options: FitOptions = field(default_factory=FitOptions)
    modulation: list = field(default_factory=list)  # one row per client the modulation fit tried

    def summary(self) -> dict:
        """Plain-data summary (JSON-ready) of the fit."""
        from ..sample.plan import servegen_counts

        p, own = self.pool, self.level == LEVEL_WINDOW
        rho_s = spearman(self.log.input_tokens, self.log.output_tokens)
        ks = self.ks[own]
        laws = {LAW_NAMES[c]: int(np.count_nonzero(p.law[own] == c)) for c in LAW_NAMES}
        return {"source": self.log.report.to_dict(), "client_key": list(self.client_key) or None,
                "options": asdict(self.options), "clients": p.n_clients, "windows": p.n_windows,
                "length_windows": int(p.dist_id.shape[1]), "duration_s": p.duration, "origin": p.origin,
                "start": self.log.start_text or self.log.start, "requests": int(self.count.sum()),
                "servegen_mode_requests": int(servegen_counts(np.where(p.active, p.rate, 0.0),
                                                               p.window_len[None, :]).sum()),
                "windows_by_level": {LEVEL_NAMES[k]: int(np.count_nonzero(self.level == k)) for k in LEVEL_NAMES},
                "laws_of_fitted_windows": laws,
                "ks_of_fitted_windows": ({"median": float(np.median(ks)), "p90": float(np.quantile(ks, 0.9)),
                                          "max": float(ks.max())} if len(ks) else None),
                "windows_above_ks_threshold": int(np.count_nonzero(ks > self.options.ks_threshold)),
                "modulation": self.modulation,
                "modulated_clients": int(sum(r["modulated"] for r in self.modulation)),
                "distributions": len(p.dists), "distribution_points": int(len(p.dists.values)),
                "input_output_spearman": rho_s, "length_correlation": p.length_correlation}

    def describe(self) -> str:
        s = self.summary()
        lines = [f"fitted {s['clients']:,} client(s) x {s['windows']:,} windows of {self.options.window} s "
                 f"({s['duration_s']:,} s) from {s['requests']:,} requests; key: "
                 f"{', '.join(self.client_key) if self.client_key else 'whole log as one client'}"]
        for name, n in s["windows_by_level"].items():
            if n:
                lines.append(f"  {n:8,} windows: {name}")
        lines.append("  laws of fitted windows: " + ", ".join(f"{k} {v:,}" for k, v in s["laws_of_fitted_windows"].items()))
        if s["ks_of_fitted_windows"]:
            k = s["ks_of_fitted_windows"]
            lines.append(f"  KS distance of the chosen law: median {k['median']:.3f}, p90 {k['p90']:.3f}, "
                         f"max {k['max']:.3f}")
            bad = s["windows_above_ks_threshold"]
            if bad:
                lines.append(f"  {bad:,} of {own_count(s):,} fitted windows: no single law fits (KS above "
                             f"{self.options.ks_threshold}); their burstiness is left to the modulation fit")
        lines += _modulation_lines(s["modulation"], self.options.modulation)
        lines.append(f"  length distributions: {s['distributions']:,} ({s['distribution_points']:,} points)")
        lines.append(f"  input/output rank correlation {s['input_output_spearman']:.3f}: the pool carries the "
                     f"Gaussian-copula correlation {s['length_correlation']} (generation's default for this pool)")
        lines.append(f"  native-rate generation: renewal/poisson modes expect {s['requests']:,} requests; servegen "
                     f"mode gives {s['servegen_mode_requests']:,} (ceil(r*L) - 1 per active window)")
        return "\n".join(lines)


def own_count(s: dict) -> int:
    return sum(s["laws_of_fitted_windows"].values())


def _modulation_lines(rows: list, enabled: bool) -> list[str]:
    if not enabled:
        return ["  intra-window modulation: off (plain windows)"]
    out = []
    for r in rows:
        what = (f"modulated, sigma {r['sigma']}, tau {r['tau']:g} s" if r["modulated"] else "plain windows")
        out.append(f"  client {r['client']}: {what} (IDC-curve error {r['best_error']:.3f} vs plain "
                   f"{r['plain_error']:.3f}, seed-to-seed noise {r['noise']:.3f})")
    return out or ["  intra-window modulation: no client has enough requests to fit it"]


def suggested_correlation(rho_s: float):
    """Generation's length correlation for a Spearman rank correlation rho_s: the Gaussian copula
    whose rank correlation is rho_s (rho = 2 sin(pi rho_s / 6)), clipped to [0, 1]."""
    if not np.isfinite(rho_s):
        return "independent"
    rho = float(np.clip(2.0 * np.sin(np.pi * rho_s / 6.0), 0.0, 1.0))
    return "independent" if rho < 0.005 else round(rho, 2)


# --------------------------------------------------------------------------- keys
def client_index(log: RequestLog, client_key) -> tuple[np.ndarray, np.ndarray, list, tuple]:
    """(client row per request, client ids, labels, key columns) for a key of zero or more columns."""
    if client_key is None or client_key == "" or client_key == ():
        cols = ()
    elif isinstance(client_key, str):
        cols = tuple(c.strip() for c in client_key.split(","))
    else:
        cols = tuple(client_key)
    n = len(log)
    if not cols:
        return np.zeros(n, np.int64), np.zeros(1, np.int64), ["all"], ()
    codes, uniques = [], []
    for c in cols:
        if c not in log.columns or c == "failed":
            raise ValueError(f"client key column {c!r} is not in {log.report.path}; its key columns are "
                             f"{log.key_columns() or 'none (fit it as one client)'}")
        u, inv = np.unique(log.columns[c], return_inverse=True)
        codes.append(inv.astype(np.int64))
        uniques.append(u)
    combined = np.zeros(n, np.int64)
    for code, u in zip(codes, uniques):
        combined = combined * len(u) + code
    ukeys, row = np.unique(combined, return_inverse=True)
    # decode each client's tuple of key values
    parts, rest = [], ukeys.copy()
    for u in reversed(uniques):
        parts.append(u[rest % len(u)])
        rest //= len(u)
    parts.reverse()
    labels = [" | ".join(str(p[i]) for p in parts) for i in range(len(ukeys))]
    if len(cols) == 1 and np.issubdtype(np.asarray(uniques[0]).dtype, np.integer):
        ids = np.asarray(uniques[0], np.int64)  # integer client ids (a trace's client_id) are kept
    else:
        ids = np.arange(len(ukeys), dtype=np.int64)
    return row.astype(np.int64), ids, labels, cols


# --------------------------------------------------------------------------- fit
def fit_pool(log: RequestLog, client_key=None, options: FitOptions | None = None, *, input_rows=None,
             **kwargs) -> FitResult:
    """Fit a ClientPool to `log`. `options` or keyword arguments set FitOptions fields.
    `input_rows` (bool mask) limits the input-length distributions to those rows (with
    sessions: the first turns, whose whole input the pool draws; later turns draw new text)."""
    opts = options or FitOptions(**kwargs)
    if options is not None and kwargs:
        raise TypeError("give either options or keyword options, not both")
    opts.validate()
    if len(log) == 0:
        raise ValueError(f"{log.report.path}: no requests to fit")
    ci, ids, labels, cols = client_index(log, client_key)
    n_clients = len(ids)
    span = int(math.ceil(log.span))
    n_win = -(-span // opts.window)
    wstart = np.arange(n_win, dtype=np.int64) * opts.window
    wlen = np.minimum(wstart + opts.window, span) - wstart
    t = log.timestamp
    wi = np.minimum((t // opts.window).astype(np.int64), n_win - 1)
    count = np.bincount(ci * n_win + wi, minlength=n_clients * n_win).reshape(n_clients, n_win)
    rate = count / wlen[None, :]

    step = coarse_clock(t)  # a coarse clock's ties are spread over their tick; generation floors to it
    arrival = _fit_arrivals(t if step is None else spread_ticks(t, step), ci, wi, count, rate, wlen, log.resolution,
                            opts)
    n_len = -(-span // opts.length_window)
    li = (t // opts.length_window).astype(np.int64)
    dist_id, table = _fit_lengths(log, ci, li, n_clients, n_len, opts, input_rows)
    pool = ClientPool(category="language", model=f"fit:{Path(log.report.path).stem}", client_ids=ids,
                      window_start=wstart, window_len=wlen.astype(np.int64), window_index=np.arange(n_win, dtype=np.int64),
                      length_index=(wstart // opts.length_window).astype(np.int32), rate=rate, cv=arrival["cv"],
                      law=arrival["law"], shape=arrival["shape"], scale=arrival["scale"], fields=FIELDS,
                      dist_id=dist_id, dists=table, window_size=opts.window, length_window_size=opts.length_window,
                      origin=int(math.floor(log.start)) if np.isfinite(log.start) else 0)
    rho = suggested_correlation(spearman(log.input_tokens, log.output_tokens))
    pool = pool.replace(length_correlation=0.0 if rho == "independent" else float(rho), clock_step=step)
    rows = []
    if opts.modulation and opts.shape_rule == "moments":
        pool, rows = fit_modulation(pool, t, ci, labels)
    return FitResult(pool=pool, labels=labels, count=count, ks=arrival["ks"], level=arrival["level"], log=log,
                     client_key=cols, options=opts, modulation=rows)


def _fit_arrivals(t, ci, wi, count, rate, wlen, resolution, opts: FitOptions) -> dict:
    n_clients, n_win = count.shape
    floor = max(resolution / 2.0, MIN_TIE_FLOOR)
    # inter-arrival times within each (client, window), in group order; the log is time-sorted,
    # so a stable sort by group keeps each group's arrivals in time order
    gkey = ci * n_win + wi
    order = np.argsort(gkey, kind="stable")
    gs, ts = gkey[order], t[order]
    same = gs[1:] == gs[:-1]
    iat, igroup = np.diff(ts)[same], gs[1:][same]
    n_iat = count.reshape(-1) - 1  # per group (negative for empty groups)

    shape_shape = (n_clients, n_win)
    law = np.full(shape_shape, LAW_IDLE, np.uint8)
    cv, shape, scale = (np.zeros(shape_shape) for _ in range(3))
    ks = np.full(shape_shape, np.nan)
    level = np.zeros(shape_shape, np.uint8)
    flat = lambda a: a.reshape(-1)  # noqa: E731

    # 1. windows with enough requests: their own fit
    own = flat(count) >= opts.min_requests
    sel = own[igroup]
    g = L.Groups(iat[sel], _offsets(n_iat[own]))
    if len(g.n):
        f = L.fit_laws(g, floor)
        st_law, st_shape, st_cv = _stored(f["law"], f["cv"], f["mle_shape"], opts.shape_rule)
        idx = np.flatnonzero(own)
        flat(law)[idx], flat(shape)[idx], flat(cv)[idx] = st_law, st_shape, st_cv
        flat(scale)[idx] = L.law_scale(st_law, st_shape, f["mean"])
        flat(ks)[idx] = L.ks_distance(g, st_law, st_shape)
        flat(level)[idx] = LEVEL_WINDOW

    # 2. sparse windows borrow from the client's, then the log's, pooled rate-scaled IATs
    sparse = (flat(count) > 0) & ~own
    if sparse.any():
        scaled = iat * flat(rate)[igroup]
        cl = igroup // n_win
        per_client = np.bincount(cl, minlength=n_clients)
        ok_client = per_client >= opts.min_requests - 1
        parent_law = np.full(n_clients, L.LAW_EXPONENTIAL, np.uint8)
        parent_shape, parent_cv = np.ones(n_clients), np.ones(n_clients)
        parent_level = np.full(n_clients, LEVEL_DEFAULT, np.uint8)
        if len(scaled) >= opts.min_requests - 1:
            whole = L.fit_laws(L.Groups(scaled, np.array([0, len(scaled)])), floor)
            lw, sh, cvv = _stored(whole["law"], whole["cv"], whole["mle_shape"], opts.shape_rule)
            parent_law[:], parent_shape[:], parent_cv[:], parent_level[:] = lw[0], sh[0], cvv[0], LEVEL_LOG
        if ok_client.any():
            csel = ok_client[cl]
            corder = np.argsort(cl[csel], kind="stable")
            gc = L.Groups(scaled[csel][corder], _offsets(per_client[ok_client]))
            fc = L.fit_laws(gc, floor)
            lw, sh, cvv = _stored(fc["law"], fc["cv"], fc["mle_shape"], opts.shape_rule)
            parent_law[ok_client], parent_shape[ok_client], parent_cv[ok_client] = lw, sh, cvv
            parent_level[ok_client] = LEVEL_CLIENT
        idx = np.flatnonzero(sparse)
        c = idx // n_win
        flat(law)[idx], flat(shape)[idx], flat(cv)[idx] = parent_law[c], parent_shape[c], parent_cv[c]
        flat(scale)[idx] = L.law_scale(parent_law[c], parent_shape[c], 1.0 / flat(rate)[idx])
        flat(level)[idx] = parent_level[c]
    return {"law": law, "cv": cv, "shape": shape, "scale": scale, "ks": ks, "level": level}


def _offsets(n: np.ndarray) -> np.ndarray:
    out = np.zeros(len(n) + 1, np.int64)
    np.cumsum(n, out=out[1:])
    return out


def _stored(law, cv, mle_shape, rule):
    """(law, shape, cv) as stored in the pool under the shape rule."""
    if rule == "moments":
        return law, L.moment_shape(law, cv), np.where(law == L.LAW_EXPONENTIAL, cv, np.maximum(cv, L.CV_FLOOR))
    return law, mle_shape, L.law_cv(law, mle_shape)


# --------------------------------------------------------------------------- lengths
def _fit_lengths(log: RequestLog, ci_all, li_all, n_clients: int, n_len: int, opts: FitOptions, input_rows=None):
    """dist_id[C, D, F] and the table, with the fallback order window -> client -> log window -> log."""
    builder = DistTableBuilder()
    dist_id = np.full((n_clients, n_len, len(FIELDS)), -1, np.int32)
    enough = opts.min_length_samples
    for f, name in enumerate(FIELDS):
        sel = input_rows if (input_rows is not None and name == "input_tokens") else slice(None)
        ci, li = ci_all[sel], li_all[sel]
        n_cd = np.bincount(ci * n_len + li, minlength=n_clients * n_len).reshape(n_clients, n_len)
        n_c, n_d = n_cd.sum(axis=1), n_cd.sum(axis=0)
        v = getattr(log, name)[sel].astype(np.float64)
        whole = _compact(np.sort(v), opts.length_points, builder)
        by_window = _group_dists(v, li, n_len, n_d >= enough, opts.length_points, builder)
        by_client = _group_dists(v, ci, n_clients, n_c >= enough, opts.length_points, builder)
        own = _group_dists(v, ci * n_len + li, n_clients * n_len, (n_cd >= enough).reshape(-1), opts.length_points,
                           builder).reshape(n_clients, n_len)
        fallback = np.where(by_window >= 0, by_window, whole)[None, :]
        fallback = np.where(by_client[:, None] >= 0, by_client[:, None], fallback)
        dist_id[:, :, f] = np.where(own >= 0, own, fallback)
    return dist_id, builder.build()


def _group_dists(v, group, n_groups, wanted, points, builder) -> np.ndarray:
    """Distribution id per group (−1 where not wanted)."""
    ids = np.full(n_groups, -1, np.int32)
    if not wanted.any():
        return ids
    sel = wanted[group]
    order = np.lexsort((v[sel], group[sel]))
    vs, gs = v[sel][order], group[sel][order]
    bounds = np.flatnonzero(np.diff(gs)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(gs)]))
    for s, e in zip(starts, ends):
        ids[gs[s]] = _compact(vs[s:e], points, builder)
    return ids


def _compact(sorted_values: np.ndarray, points: int, builder: DistTableBuilder) -> int:
    """Exact empirical pmf with at most `points` support values, else `points` order statistics."""
    vals, counts = np.unique(sorted_values, return_counts=True)
    if len(vals) > points:
        n = len(sorted_values)
        picks = sorted_values[np.round(np.linspace(0, n - 1, points)).astype(np.int64)]
        vals, counts = np.unique(picks, return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    cdf[-1] = 1.0
    return builder.add_normalised(vals, cdf)
