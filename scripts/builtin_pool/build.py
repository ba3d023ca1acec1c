"""Draw the builtin pool from the summary statistics (summary.json) with a fixed seed.

Every draw comes from one `np.random.default_rng(seed)` in a fixed order, so the pool is a pure
function of (summary, design constants, seed). Steps 1-7 (arrivals) are here; step 8 (lengths)
is in lengths.py. docs/builtin-pool.md describes each step.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from servegen_fast.model.fields import LANGUAGE_FIELDS, LAW_GAMMA, LAW_WEIBULL

from servegen_fast.model.pool import ClientPool, regular_grid

from .design import (AGGREGATION_RATE, AMPLITUDE_JITTER, CV_RANGE, DEFAULT_SEED, LENGTH_WINDOW, LOG_STEP,
                     MIN_ACTIVE_FRACTION, N_CLIENTS, N_DAYS, PHASE_JITTER_S, TARGET_RATE, WEIBULL_C_RANGE, WINDOW)
from .lengths import draw_lengths

# math.lgamma, not servegen_fast.model.special.gammaln: the two differ in the last bits, and the
# Weibull table below (its shapes and CVs are stored in the shipped file) is pinned to these.
_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])


def build_pool(summary: dict, seed: int = DEFAULT_SEED) -> ClientPool:
    """The builtin pool drawn from `summary` (the content of summary.json) and `seed`."""
    rng = np.random.default_rng(seed)
    C, W = N_CLIENTS, N_DAYS * 86400 // WINDOW
    start, wlen, widx, lidx = regular_grid(W, WINDOW, LENGTH_WINDOW)
    u, mean_rate = _client_sizes(summary, rng)
    g = 1 / np.sqrt(1 + mean_rate / AGGREGATION_RATE)      # big clients are aggregates of many users
    active = _activity(summary, rng, u, g, W)
    profile = _profile(summary, rng, start)
    rate, active = _rates(summary, rng, profile, active, mean_rate, g)
    arrays = _laws(summary, rng, rate, active)
    dist_id, dists = draw_lengths(summary["lengths"], rng, mean_rate / TARGET_RATE, int(lidx.max()) + 1)
    return ClientPool(category="language", model="builtin", client_ids=np.arange(C, dtype=np.int64),
                      window_start=start, window_len=wlen, window_index=widx, length_index=lidx, **arrays,
                      fields=LANGUAGE_FIELDS, dist_id=dist_id, dists=dists,
                      window_size=WINDOW, length_window_size=LENGTH_WINDOW)


def _client_sizes(s: dict, rng):
    """1. Stratified lognormal scores, shuffled: (centred log mean rate u, mean rate summing to TARGET_RATE)."""
    C = N_CLIENTS
    nd = NormalDist()
    strata = (np.arange(C) + rng.random(C)) / C
    z = np.array([nd.inv_cdf(float(p)) for p in strata])[rng.permutation(C)]
    u = s["client_size"]["log_sd"] * z
    return u, np.exp(u) / np.exp(u).sum() * TARGET_RATE


def _activity(s: dict, rng, u, g, W: int):
    """2. A two-state Markov chain per client with stationary fraction a_c: active [C, W]."""
    C = N_CLIENTS
    act_s = s["activity"]
    a = _sigmoid(act_s["logit_intercept"] + act_s["logit_slope"] * u
                 + g * act_s["logit_resid_sd"] * rng.standard_normal(C))
    a = np.clip(a, MIN_ACTIVE_FRACTION, 1.0)
    rho = act_s["lag1"]
    p_on, p_off = (1 - rho) * a, (1 - rho) * (1 - a)
    uni = rng.random((C, W))
    active = np.empty((C, W), dtype=bool)
    active[:, 0] = rng.random(C) < a
    for t in range(1, W):
        active[:, t] = np.where(active[:, t - 1], uni[:, t] >= p_off, uni[:, t] < p_on)
    return active


def _profile(s: dict, rng, start: np.ndarray) -> np.ndarray:
    """3. Daily profile per client (own amplitude and phase) times the weekly factor: [C, W]."""
    C = N_CLIENTS
    prof_s = s["profile"]
    alpha = np.exp(AMPLITUDE_JITTER * rng.standard_normal(C))
    shift = PHASE_JITTER_S * rng.standard_normal(C)
    omega = 2 * np.pi / 86400
    t = start[None, :].astype(np.float64) - shift[:, None]
    shape_d = np.zeros((C, len(start)))
    for k, (amp, ph) in enumerate(prof_s["harmonics"], 1):
        # undo the damping of harmonic k by the phase jitter, so the clients' mean has `amp`
        amp_k = amp / (math.exp(-0.5 * (k * omega * PHASE_JITTER_S) ** 2) * math.exp(0.5 * AMPLITUDE_JITTER ** 2))
        shape_d += amp_k * np.cos(k * omega * t + ph)
    shape_d = np.maximum(1 + alpha[:, None] * shape_d, 0.05)
    dow = (start // 86400) % 7
    weekly = np.where(np.isin(dow, prof_s["weekend_days"]), prof_s["weekend_factor"], 1.0)
    weekly = weekly / weekly.mean()
    return shape_d * weekly[None, :]


def _rates(s: dict, rng, profile, active, mean_rate, g):
    """4. Profile x AR(1) log-normal noise that shrinks for big clients, scaled to each client's
    mean rate; windows below the data's smallest active rate become idle. (rate, active)."""
    C, W = profile.shape
    noise_s = s["rate_noise"]
    sd = noise_s["log_sd"] * g
    v = _ar1(rng, (C, W), noise_s["lag1"])
    raw = profile * np.exp(sd[:, None] * v - 0.5 * sd[:, None] ** 2)
    min_rate = s["activity"]["min_active_rate"]

    def scaled(act):
        tot = np.where(act, raw, 0.0).sum(axis=1)
        return np.where(act, raw * (mean_rate * W / np.maximum(tot, 1e-300))[:, None], 0.0)

    rate = scaled(active)
    # a ServeGen window with too few requests is idle: drop active windows below the data's
    # minimum active rate, then rescale (which only raises the others)
    keep = active & (rate >= min_rate)
    none = ~keep.any(axis=1)
    if none.any():  # keep each such client's largest window
        best = np.argmax(np.where(active, raw, -1.0), axis=1)
        keep[np.flatnonzero(none), best[none]] = True
    return scaled(keep), keep


def _laws(s: dict, rng, rate, active) -> dict:
    """5.-7. CVs (Gaussian copula through the data's CV quantiles), the law per window, and the
    law parameters on the LOG_STEP grid: {rate, cv, law, shape, scale} [C, W]."""
    C, W = rate.shape
    cv_s = s["cv"]
    f_c = cv_s["client_var_share"]
    zcv = (math.sqrt(f_c) * rng.standard_normal(C)[:, None]
           + math.sqrt(1 - f_c) * _ar1(rng, (C, W), cv_s["lag1"]))
    zq = np.array([NormalDist().inv_cdf(p) for p in cv_s["probs"]])
    log_cv = np.interp(zcv, zq, np.array(cv_s["log_quantiles"]))
    log_cv = np.clip(log_cv, math.log(CV_RANGE[0]), math.log(CV_RANGE[1]))

    # P(Weibull | cv) logistic, intercept shifted so the active-window share matches
    m_tab, c_tab, cv_tab = weibull_table()
    law_s = s["law"]
    x = log_cv[active]
    allowed = x >= math.log(cv_tab[0])

    def share_at(b0):
        return float(np.where(allowed, _sigmoid(b0 + law_s["logit_slope"] * x), 0.0).mean())

    lo, hi = law_s["logit_intercept"] - 10, law_s["logit_intercept"] + 10
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if share_at(mid) < law_s["weibull_share"] else (lo, mid)
    p_w = np.where(allowed, _sigmoid(0.5 * (lo + hi) + law_s["logit_slope"] * x), 0.0)
    weib = rng.random(len(x)) < p_w

    # quantise onto the log grid and fill the law parameters
    b = LOG_STEP
    i_rate = np.maximum(np.round(np.log(rate[active]) / b), math.ceil(math.log(s["activity"]["min_active_rate"]) / b))
    law_a = np.where(weib, LAW_WEIBULL, LAW_GAMMA).astype(np.uint8)
    j = np.round(x / b)                                           # Gamma: cv = exp(b j)
    mid_cv = 0.5 * (np.log(cv_tab[1:]) + np.log(cv_tab[:-1]))
    mi = np.searchsorted(mid_cv, x)                               # Weibull: nearest tabulated cv
    cv_a = np.where(weib, cv_tab[mi], np.exp(b * j))
    shape_a = np.where(weib, c_tab[mi], np.exp(-2 * b * j))
    scale_a = np.where(weib, np.exp(-b * (i_rate + m_tab[mi])), np.exp(b * (2 * j - i_rate)))
    out = {}
    for name, vals, dt in (("rate", np.exp(b * i_rate), np.float64), ("cv", cv_a, np.float64),
                           ("shape", shape_a, np.float64), ("scale", scale_a, np.float64),
                           ("law", law_a, np.uint8)):
        arr = np.zeros((C, W), dtype=dt)
        arr[active] = vals
        out[name] = arr
    return out


def weibull_cv(c: np.ndarray) -> np.ndarray:
    """CV of Weibull(c) with math.lgamma (see _lgamma; laws.weibull_cv is the package's own)."""
    c = np.asarray(c, dtype=np.float64)
    return np.sqrt(np.expm1(_lgamma(1 + 2 / c) - 2 * _lgamma(1 + 1 / c)))


def weibull_table(step: float = LOG_STEP):
    """Weibull shapes c_m with Gamma(1 + 1/c_m) = exp(step * m), m over WEIBULL_C_RANGE.

    Returns (m, c, cv), cv ascending in m. Keeping Gamma(1+1/c) on the log grid puts the
    scale 1/(rate Gamma(1+1/c)) on the grid too.
    """
    c_lo, c_hi = WEIBULL_C_RANGE
    m_lo = math.ceil(math.lgamma(1 + 1 / c_hi) / step)
    m_hi = math.floor(math.lgamma(1 + 1 / c_lo) / step)
    m = np.arange(m_lo, m_hi + 1)
    target = step * m
    lo = np.full(len(m), math.log(c_lo * 0.99))
    hi = np.full(len(m), math.log(2.1662))     # Gamma(1+1/c) decreases in c below ~2.1662
    for _ in range(80):                         # bisection in log c
        mid = 0.5 * (lo + hi)
        big = _lgamma(1 + 1 / np.exp(mid)) > target
        lo = np.where(big, mid, lo)
        hi = np.where(big, hi, mid)
    c = np.exp(0.5 * (lo + hi))
    return m, c, weibull_cv(c)


def _ar1(rng: np.random.Generator, shape: tuple, rho: float) -> np.ndarray:
    """Stationary Gaussian AR(1) along axis 1 (unit variance)."""
    eps = rng.standard_normal(shape)
    out = np.empty(shape)
    out[:, 0] = eps[:, 0]
    s = math.sqrt(1 - rho * rho)
    for t in range(1, shape[1]):
        out[:, t] = rho * out[:, t - 1] + s * eps[:, t]
    return out


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))
