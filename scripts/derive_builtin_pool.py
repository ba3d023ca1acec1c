#!/usr/bin/env python
"""Derive the builtin synthetic language pool (``servegen_fast/data/builtin.parquet``).

The builtin pool is made by this project: no client's data is copied from ServeGen. The
script reduces ServeGen's language pools (m-large, m-mid, m-small) to a few dozen summary
statistics (fits of how client sizes, activity, diurnal shape, CVs, arrival laws and
length distributions spread), keeps them as constants in ``SUMMARY`` below, and draws a
synthetic 300-client, 14-day pool from them with a fixed seed. See docs/builtin-pool.md.

    python scripts/derive_builtin_pool.py                        # rebuild from SUMMARY
    python scripts/derive_builtin_pool.py --data-dir DIR          # recompute the statistics, compare
    python scripts/derive_builtin_pool.py --data-dir DIR --refresh-summary   # and rewrite SUMMARY

DIR is ServeGen's ``data/`` folder (holding ``language/m-large`` ...). Without
``--refresh-summary`` the pool is always built from the embedded SUMMARY, so the shipped
file is a pure function of (SUMMARY, seed, this script).
"""
from __future__ import annotations

import argparse
import math
import pprint
import re
import sys
import time
import warnings
from pathlib import Path
from statistics import NormalDist

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a source tree without installing
    sys.path.insert(0, str(ROOT))

from servegen_fast.model.distributions import DistTableBuilder  # noqa: E402
from servegen_fast.model.pool import (LANGUAGE_FIELDS, LAW_GAMMA, LAW_IDLE, LAW_WEIBULL,  # noqa: E402
                                ClientPool, regular_grid)

# ----------------------------------------------------------------------------------------
# Statistics computed from ServeGen's language data by `derive_summary` (4 significant
# digits). Rewritten by --refresh-summary; edit the code, not these numbers.
# BEGIN SUMMARY
SUMMARY = {'source': 'ServeGen language/{m-large,m-mid,m-small} (github.com/alibaba/ServeGen, Apache-2.0)',
 'client_size': {'log_sd': 2.3,
                 'log_sd_per_model': {'language/m-large': 2.146,
                                      'language/m-mid': 2.348,
                                      'language/m-small': 2.704}},
 'activity': {'logit_intercept': -1.12,
              'logit_slope': 1.222,
              'logit_resid_sd': 2.411,
              'lag1': 0.8471,
              'min_active_rate': 0.01667},
 'profile': {'harmonics': [[0.2781, 2.104], [0.07373, 0.5614], [0.1022, -1.751], [0.05102, 2.079]],
             'weekend_days': [4, 5],
             'weekend_factor': 0.8107,
             'fit_corr': 0.9456,
             'peak_to_mean': 1.404,
             'min_to_mean': 0.5572},
 'rate_noise': {'log_sd': 1.273, 'lag1': 0.8628},
 'cv': {'probs': [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99,
                  0.999],
        'log_quantiles': [-0.8411, -0.1498, -0.02035, 0.01923, 0.06732, 0.1075, 0.1857, 0.3012,
                          0.5271, 0.8938, 1.465, 2.336, 3.056, 4.588, 5.709],
        'client_var_share': 0.601,
        'lag1': 0.5926},
 'law': {'weibull_share': 0.2446,
         'logit_intercept': -2.683,
         'logit_slope': 2.412,
         'weibull_share_per_model': {'language/m-large': 0.2103,
                                     'language/m-mid': 0.2544,
                                     'language/m-small': 0.3037}},
 'lengths': {'names': ['input_tokens.log_median', 'input_tokens.log_sigma_lo',
                       'input_tokens.log_sigma_hi', 'output_tokens.log_median',
                       'output_tokens.log_sigma_lo', 'output_tokens.log_sigma_hi'],
             'mean': [6.162, -1.948, -1.581, 3.646, -1.242, -1.059],
             'cov': [[1.316, 0.4833, 0.1906, 1.114, 0.1935, 0.074],
                     [0.4833, 1.494, 1.0, 0.4755, 0.5795, 0.5279],
                     [0.1906, 1.0, 1.391, 0.3605, 0.4459, 0.6066],
                     [1.114, 0.4755, 0.3605, 3.201, 0.9079, 0.1662],
                     [0.1935, 0.5795, 0.4459, 0.9079, 1.435, 0.6654],
                     [0.074, 0.5279, 0.6066, 0.1662, 0.6654, 1.246]],
             'within_sd': [0.632, 1.03],
             'within_corr': 0.2905,
             'within_lag1': 0.537,
             'clients': 258},
 'reference': {'models': ['language/m-large', 'language/m-mid', 'language/m-small'],
               'clients': {'language/m-large': 162, 'language/m-mid': 109, 'language/m-small': 43},
               'clients_with_lengths': {'language/m-large': 147,
                                        'language/m-mid': 74,
                                        'language/m-small': 38},
               'mean_rate_all_traces': {'language/m-large': 195.8,
                                        'language/m-mid': 1790.0,
                                        'language/m-small': 1174.0},
               'mean_rate_with_lengths': {'language/m-large': 122.8,
                                          'language/m-mid': 1267.0,
                                          'language/m-small': 507.2},
               'top10_share': {'language/m-large': 0.75,
                               'language/m-mid': 0.801,
                               'language/m-small': 0.7699},
               'idle_fraction': {'language/m-large': 0.6943,
                                 'language/m-mid': 0.5159,
                                 'language/m-small': 0.5375},
               'peak_to_mean': {'language/m-large': 2.977,
                                'language/m-mid': 1.924,
                                'language/m-small': 3.303},
               'aggregate_day_corr': {'language/m-large': -0.01332,
                                      'language/m-mid': 0.2009,
                                      'language/m-small': 0.6533},
               'rate_weighted_cv_q': {'language/m-large': [0.9417, 1.028, 1.194, 2.216, 6.225],
                                      'language/m-mid': [1.035, 1.288, 2.039, 7.74, 27.39],
                                      'language/m-small': [1.066, 1.105, 1.217, 2.16, 6.989]},
               'length_percentiles': {'language/m-large': {'input_tokens': {'p50': 601.0,
                                                                            'p90': 2371.0,
                                                                            'p99': 5452.0,
                                                                            'mean': 914.3},
                                                           'output_tokens': {'p50': 53.0,
                                                                             'p90': 461.0,
                                                                             'p99': 872.0,
                                                                             'mean': 155.1}},
                                      'language/m-mid': {'input_tokens': {'p50': 173.0,
                                                                          'p90': 645.0,
                                                                          'p99': 2583.0,
                                                                          'mean': 306.7},
                                                         'output_tokens': {'p50': 34.0,
                                                                           'p90': 95.0,
                                                                           'p99': 397.0,
                                                                           'mean': 50.76}},
                                      'language/m-small': {'input_tokens': {'p50': 40.0,
                                                                            'p90': 322.0,
                                                                            'p99': 1478.0,
                                                                            'mean': 119.7},
                                                           'output_tokens': {'p50': 3.0,
                                                                             'p90': 44.0,
                                                                             'p99': 142.0,
                                                                             'mean': 14.89}}}}}
# END SUMMARY

# ----------------------------------------------------------------------------------------
# Design choices (not statistics of the data). Changing any of them changes the pool.
DEFAULT_SEED = 2025
N_CLIENTS = 300
N_DAYS = 14
WINDOW = 600                    # arrival window (s)
LENGTH_WINDOW = 21600           # length window (s)
TARGET_RATE = 120.0             # mean aggregate rate (req/s), about m-large's (see SUMMARY["reference"])
LOG_STEP = 0.05                 # rates, CVs and Gamma(1+1/c) lie on exp(LOG_STEP * k): a 5% grid that
                                # Parquet's dictionary encoding stores in ~10 bits a value
CV_RANGE = (0.2, 50.0)          # CVs are clipped to this range
WEIBULL_C_RANGE = (0.15, 2.1)   # Weibull shape bounds (Gamma(1+1/c) is monotone below c = 2.166)
PHASE_JITTER_S = 3600.0         # sd of a client's shift of the daily profile (s)
AMPLITUDE_JITTER = 0.25         # sd of the log of a client's diurnal amplitude factor
AGGREGATION_RATE = 0.06         # (req/s) a client of mean rate m is an aggregate of many users: its
                                # log-rate noise sd and its activity's logit residual are multiplied by
                                # g = 1 / sqrt(1 + m / AGGREGATION_RATE), so big clients are smooth and
                                # nearly always active and the pool keeps its daily shape (the data's
                                # big clients are far noisier; see docs/builtin-pool.md)
MIN_ACTIVE_FRACTION = 0.005     # at least ~10 active windows a client (before the min-rate rule)
MAX_VARIANTS = 4                # a client has 1..MAX_VARIANTS length regimes (1 + Binomial(3, 1/2))
LENGTH_GRID = {"input_tokens": (131072, 256), "output_tokens": (16384, 192)}  # (max, grid points)
LENGTH_SIGMA_RANGE = (0.02, 1.2) # per-client log-sd bounds of the length distributions
TYPICAL_TOP = 0.1               # fraction of clients (the largest) given the most central length parameters
LENGTH_MEDIAN_SD = 2.0          # per-client log medians are clipped to mean +- this many sd
PROB_BITS = 16                  # probabilities are multiples of 2**-PROB_BITS (largest-remainder
                                # rounding): points below ~1.5e-5 vanish and the cdf column stays small

MODELS = ("language/m-large", "language/m-mid", "language/m-small")
CV_PROBS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
Z95 = NormalDist().inv_cdf(0.95)


# ========================================================================================
# Statistics from the data
# ========================================================================================
def _sig(x, digits: int = 4):
    """Round floats (recursively) to `digits` significant digits, for a readable SUMMARY."""
    if isinstance(x, dict):
        return {k: _sig(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_sig(v, digits) for v in x]
    if isinstance(x, (np.integer, int)) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return 0.0 if x == 0 else float(f"{x:.{digits - 1}e}")
    return x


def read_traces(model_dir: Path):
    """All trace files of a model directory (also clients without a dataset file): rate, cv, law."""
    files = sorted(model_dir.glob("chunk-*-trace.csv"), key=lambda p: int(p.name.split("-")[1]))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no chunk-*-trace.csv files")
    rate, cv, law = [], [], []
    codes = {"": LAW_IDLE, "Gamma": LAW_GAMMA, "Weibull": LAW_WEIBULL}
    for f in files:
        rows = [ln.split(",") for ln in f.read_text().splitlines() if ln.strip()]
        rate.append([float(r[1]) for r in rows])
        cv.append([float(r[2]) for r in rows])
        law.append([codes[r[3]] for r in rows])
    rate, cv, law = np.array(rate), np.array(cv), np.array(law, dtype=np.uint8)
    rate[law == LAW_IDLE] = 0.0
    cv[law == LAW_IDLE] = 0.0
    return rate, cv, law


def _dist_quantile(table, q: float) -> np.ndarray:
    """First support value whose cdf reaches q, for every distribution of a DistTable."""
    k = len(table)
    seg = np.repeat(np.arange(k), np.diff(table.offsets))
    idx = np.searchsorted(table.cdf + 2.0 * seg, q + 2.0 * np.arange(k), side="left")
    return table.values[np.minimum(idx, table.offsets[1:] - 1)]


def _lag1(resid: np.ndarray) -> float:
    """Lag-1 correlation along axis 1 of a [C, T] array with NaN gaps, pooled over rows."""
    a, b = resid[:, 1:], resid[:, :-1]
    ok = ~np.isnan(a) & ~np.isnan(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _logistic_fit(x: np.ndarray, n: np.ndarray, k: np.ndarray, iters: int = 50):
    """Binomial logistic regression logit p = b0 + b1 x on grouped data (IRLS)."""
    beta = np.zeros(2)
    X = np.column_stack([np.ones_like(x), x])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ beta)))
        w = n * p * (1 - p) + 1e-12
        z = X @ beta + (k - n * p) / w
        beta = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * z))
    return beta


def derive_summary(data_dir: str | Path) -> dict:
    """Summary statistics of ServeGen's language pools (see docs/builtin-pool.md)."""
    from servegen_fast.io.servegen_format import read_servegen

    data_dir = Path(data_dir)
    per_model = {}
    for name in MODELS:
        rate, cv, law = read_traces(data_dir / name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clients without a dataset file are left out: fine here
            pool = read_servegen(data_dir, name)
        per_model[name] = (rate, cv, law, pool)

    n_days = per_model[MODELS[0]][0].shape[1] * WINDOW // 86400
    day = 86400 // WINDOW
    ref: dict = {"models": list(MODELS), "clients": {}, "clients_with_lengths": {},
                 "mean_rate_all_traces": {}, "mean_rate_with_lengths": {}, "top10_share": {},
                 "idle_fraction": {}, "peak_to_mean": {}, "aggregate_day_corr": {},
                 "rate_weighted_cv_q": {}}
    log_u, act_frac, act_rho, profiles, dailies = [], [], [], [], []
    resid_all, resid_lag, cv_vals, cv_wts, cv_lc = [], [], [], [], []
    law_x, law_y = [], []
    min_rate = np.inf
    for name in MODELS:
        rate, cv, law, pool = per_model[name]
        act = law != LAW_IDLE
        n_c, n_w = rate.shape
        mr = rate.mean(axis=1)
        agg = rate.sum(axis=0)
        srt = np.sort(mr)[::-1]
        ref["clients"][name] = int(n_c)
        ref["clients_with_lengths"][name] = int(pool.n_clients)
        ref["mean_rate_all_traces"][name] = float(agg.mean())
        ref["mean_rate_with_lengths"][name] = float(pool.aggregate_rate().mean())
        ref["top10_share"][name] = float(srt[:math.ceil(0.1 * n_c)].sum() / srt.sum())
        ref["idle_fraction"][name] = float(1 - act.mean())
        ref["peak_to_mean"][name] = float(agg.max() / agg.mean())
        d = agg.reshape(n_days, day)
        ref["aggregate_day_corr"][name] = float(np.mean([np.corrcoef(d[i], d[i + 1])[0, 1]
                                                         for i in range(n_days - 1)]))
        ref["rate_weighted_cv_q"][name] = _weighted_quantiles(cv[act], rate[act], (0.1, 0.25, 0.5, 0.75, 0.9))
        min_rate = min(min_rate, float(rate[act].min()))

        # client sizes and activity
        pos = mr > 0
        u = np.log(mr[pos]) - np.log(mr[pos]).mean()   # centred log mean rate
        a = act[pos].mean(axis=1)
        log_u.append(u)
        act_frac.append((u, a))
        for c in np.flatnonzero(pos & (act.mean(axis=1) > 0.02) & (act.mean(axis=1) < 0.98)):
            x = act[c].astype(float)
            act_rho.append(np.corrcoef(x[1:], x[:-1])[0, 1])

        # diurnal shape: the mean over clients of each client's normalised rate (clients
        # active in > 20% of windows), folded by day; and the mean per day of the week
        busy = act.mean(axis=1) > 0.2
        norm = (rate[busy] / mr[busy, None]).reshape(busy.sum(), n_days, day)
        prof = norm.mean(axis=(0, 1))
        profiles.append(prof / prof.mean())
        daily = norm.mean(axis=(0, 2))
        dailies.append(daily / daily.mean())

        # within-client rate noise around (client level x profile), over active windows
        tiled = np.tile(prof / prof.mean(), n_days)
        lr = np.where(act, np.log(np.where(act, rate, 1.0) / tiled), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = lr - np.nanmean(lr, axis=1, keepdims=True)
        resid_all.append(res[~np.isnan(res)])
        resid_lag.append(res)

        # CV: rate-weighted distribution over active windows (each model weighs 1 in total)
        cv_vals.append(np.log(cv[act]))
        cv_wts.append(rate[act] / rate[act].sum())
        cv_lc.append(np.where(act, np.log(np.where(act, cv, 1.0)), np.nan)[act.sum(axis=1) >= 6])

        # arrival law against CV
        law_x.append(np.log(cv[act]))
        law_y.append(law[act] == LAW_WEIBULL)

    # --- client sizes: lognormal fit of mean rates (log sd, pooled over the three models)
    u_all = np.concatenate(log_u)
    size = {"log_sd": float(u_all.std()),
            "log_sd_per_model": {m: float(u.std()) for m, u in zip(MODELS, log_u)}}

    # --- activity: logistic in the centred log mean rate; Markov persistence; minimum rate
    u_a = np.concatenate([u for u, _ in act_frac])
    a_a = np.clip(np.concatenate([a for _, a in act_frac]), 0.5 / 2016, 1 - 0.5 / 2016)
    beta = np.polyfit(u_a, np.log(a_a / (1 - a_a)), 1)
    resid = np.log(a_a / (1 - a_a)) - np.polyval(beta, u_a)
    activity = {"logit_intercept": float(beta[1]), "logit_slope": float(beta[0]),
                "logit_resid_sd": float(resid.std()), "lag1": float(np.median(act_rho)),
                "min_active_rate": min_rate}

    # --- diurnal / weekly profile
    prof = np.mean(profiles, axis=0)
    spec = np.fft.rfft(prof) / len(prof)
    harmonics = [[float(2 * abs(spec[k])), float(np.angle(spec[k]))] for k in range(1, 5)]
    dow = np.mean(dailies, axis=0)[: (n_days // 7) * 7].reshape(-1, 7).mean(axis=0)
    pair = min(range(7), key=lambda i: dow[i] + dow[(i + 1) % 7])
    weekend = sorted([pair, (pair + 1) % 7])
    weekday = [i for i in range(7) if i not in weekend]
    fitted = 1 + sum(a * np.cos(2 * np.pi * k * np.arange(day) / day + ph)
                     for k, (a, ph) in enumerate(harmonics, 1))
    profile = {"harmonics": harmonics, "weekend_days": weekend,
               "weekend_factor": float(dow[weekend].mean() / dow[weekday].mean()),
               "fit_corr": float(np.corrcoef(fitted, prof)[0, 1]),
               "peak_to_mean": float(prof.max()), "min_to_mean": float(prof.min())}

    # --- rate noise
    noise = {"log_sd": float(np.concatenate(resid_all).std()),
             "lag1": float(np.mean([_lag1(r) for r in resid_lag]))}

    # --- CV: quantiles of the pooled rate-weighted log-CV distribution; in normal scores
    #     z = Phi^-1(F(log cv)), the share of variance between clients and the lag-1 correlation
    lv, lw = np.concatenate(cv_vals), np.concatenate(cv_wts)
    qs = _weighted_quantiles(lv, lw, CV_PROBS)
    zq = np.array([NormalDist().inv_cdf(p) for p in CV_PROBS])
    zs = [np.interp(lc, qs, zq) for lc in cv_lc]          # NaN (idle) stays NaN
    between, within, lags = [], [], []
    for z in zs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(z, axis=1)
        between.append(m)
        within.append((z - m[:, None])[~np.isnan(z)])
        lags.append(z - m[:, None])
    vb, vw = np.concatenate(between).var(), np.concatenate(within).var()
    cvs = {"probs": list(CV_PROBS), "log_quantiles": qs, "client_var_share": float(vb / (vb + vw)),
           "lag1": float(np.mean([_lag1(r) for r in lags]))}

    # --- law mix: Weibull share among active windows, and its logistic dependence on log CV
    x, y = np.concatenate(law_x), np.concatenate(law_y)
    bins = np.round(x / 0.05).astype(np.int64)
    ub, inv = np.unique(bins, return_inverse=True)
    n = np.bincount(inv).astype(float)
    k = np.bincount(inv, weights=y.astype(float))
    lb = _logistic_fit(ub * 0.05, n, k)
    laws = {"weibull_share": float(y.mean()), "logit_intercept": float(lb[0]), "logit_slope": float(lb[1]),
            "weibull_share_per_model": {m: float(v.mean()) for m, v in zip(MODELS, law_y)}}

    # --- lengths: per client two-piece lognormal (median, lower and upper log-sd from p05/p95)
    params, within, wcorr, wlag = [], {f: [] for f in LANGUAGE_FIELDS}, [], {f: [] for f in LANGUAGE_FIELDS}
    for name in MODELS:
        pool = per_model[name][3]
        t = pool.dists
        q = {p: np.log(np.maximum(_dist_quantile(t, p), 1.0)) for p in (0.05, 0.5, 0.95)}
        n_len = pool.dist_id.shape[1]
        per = pool.n_windows // n_len
        act_len = pool.active[:, : n_len * per].reshape(pool.n_clients, n_len, per).any(axis=2)
        cols, res = [], {}
        for f in LANGUAGE_FIELDS:
            ids = pool.dist_id[:, :, pool.field_index(f)]
            l50 = np.where(act_len, q[0.5][ids], np.nan)
            slo = np.where(act_len, np.maximum((q[0.5] - q[0.05])[ids] / Z95, LENGTH_SIGMA_RANGE[0]), np.nan)
            shi = np.where(act_len, np.maximum((q[0.95] - q[0.5])[ids] / Z95, LENGTH_SIGMA_RANGE[0]), np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                m50 = np.nanmedian(l50, axis=1)
                cols += [m50, np.log(np.nanmedian(slo, axis=1)), np.log(np.nanmedian(shi, axis=1))]
            res[f] = l50 - m50[:, None]
            within[f].append(res[f][~np.isnan(res[f])])
            wlag[f].append(res[f])
        both = ~np.isnan(res["input_tokens"])
        wcorr.append((res["input_tokens"][both], res["output_tokens"][both]))
        params.append(np.column_stack(cols)[act_len.any(axis=1)])
    P = np.concatenate(params)
    wi = np.concatenate([a for a, _ in wcorr])
    wo = np.concatenate([b for _, b in wcorr])
    lengths = {"names": [f"{f}.{p}" for f in LANGUAGE_FIELDS for p in ("log_median", "log_sigma_lo", "log_sigma_hi")],
               "mean": P.mean(axis=0).tolist(), "cov": np.cov(P, rowvar=False).tolist(),
               "within_sd": [float(np.concatenate(within[f]).std()) for f in LANGUAGE_FIELDS],
               "within_corr": float(np.corrcoef(wi, wo)[0, 1]),
               "within_lag1": float(np.mean([_lag1(r) for f in LANGUAGE_FIELDS for r in wlag[f]])),
               "clients": int(len(P))}

    ref["length_percentiles"] = {name: {f: pool_length_percentiles(per_model[name][3], f) for f in LANGUAGE_FIELDS}
                                 for name in MODELS}
    return _sig({"source": "ServeGen language/{m-large,m-mid,m-small} (github.com/alibaba/ServeGen, Apache-2.0)",
                 "client_size": size, "activity": activity, "profile": profile, "rate_noise": noise,
                 "cv": cvs, "law": laws, "lengths": lengths, "reference": ref})


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs) -> list:
    o = np.argsort(values, kind="stable")
    v, cw = values[o], np.cumsum(weights[o])
    cw /= cw[-1]
    return [float(v[min(np.searchsorted(cw, q), len(v) - 1)]) for q in qs]


def pool_length_percentiles(pool: ClientPool, field: str, qs=(0.5, 0.9, 0.99)) -> dict:
    """Percentiles and mean of `field` over all requests (windows weighted by expected count)."""
    ids = pool.window_dist_id(field)
    w = np.where(pool.active, pool.rate * pool.window_len[None, :], 0.0)
    ok = ids >= 0
    weight = np.bincount(ids[ok], weights=w[ok], minlength=len(pool.dists))
    t = pool.dists
    probs = np.diff(t.cdf, prepend=0.0)
    probs[t.offsets[:-1]] = t.cdf[t.offsets[:-1]]
    pw = probs * np.repeat(weight, np.diff(t.offsets))
    o = np.argsort(t.values, kind="stable")
    v, cw = t.values[o], np.cumsum(pw[o])
    cw /= cw[-1]
    out = {f"p{int(round(q * 100))}": float(v[min(np.searchsorted(cw, q), len(v) - 1)]) for q in qs}
    out["mean"] = float((t.values * pw).sum() / pw.sum())
    return out


# ========================================================================================
# Synthesis
# ========================================================================================
_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def weibull_cv(c: np.ndarray) -> np.ndarray:
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


def length_grid(field: str) -> np.ndarray:
    vmax, points = LENGTH_GRID[field]
    return np.unique(np.round(np.geomspace(1, vmax, points)))


def two_piece_lognormal_pmf(grid: np.ndarray, log_median: float, s_lo: float, s_hi: float) -> np.ndarray:
    """Probabilities on `grid` of a two-piece lognormal (lower/upper log-sd) truncated at the last
    grid point: point i gets the mass between the geometric midpoints around it."""
    edges = np.sqrt(grid[1:] * grid[:-1])
    z = np.log(edges) - log_median
    zs = np.where(z < 0, z / s_lo, z / s_hi)
    cdf = 0.5 * _erfc(-zs / math.sqrt(2))
    upper = math.log(grid[-1] * math.sqrt(grid[-1] / grid[-2])) - log_median
    top = 0.5 * math.erfc(-(upper / (s_lo if upper < 0 else s_hi)) / math.sqrt(2))
    p = np.maximum(np.diff(np.concatenate(([0.0], cdf, [top]))), 0.0)
    return quantise_probs(p / p.sum())


def quantise_probs(p: np.ndarray, bits: int = PROB_BITS) -> np.ndarray:
    """Integer counts summing to 2**bits, proportional to p (largest remainder, ties to the lower index)."""
    total = 1 << bits
    x = p * total
    n = np.floor(x)
    short = int(total - n.sum())
    if short > 0:
        order = np.argsort(-(x - n), kind="stable")
        n[order[:short]] += 1
    return n


def build_pool(summary: dict = None, seed: int = DEFAULT_SEED) -> ClientPool:
    """Draw the builtin pool from `summary` (default: the embedded SUMMARY) and `seed`."""
    s = SUMMARY if summary is None else summary
    if not s:
        raise RuntimeError("SUMMARY is empty: run with --data-dir ... --refresh-summary first")
    rng = np.random.default_rng(seed)
    C, W = N_CLIENTS, N_DAYS * 86400 // WINDOW
    start, wlen, widx, lidx = regular_grid(W, WINDOW, LENGTH_WINDOW)

    # 1. client sizes: stratified lognormal scores, shuffled; scaled to TARGET_RATE
    nd = NormalDist()
    strata = (np.arange(C) + rng.random(C)) / C
    z = np.array([nd.inv_cdf(float(p)) for p in strata])[rng.permutation(C)]
    u = s["client_size"]["log_sd"] * z                        # centred log mean rate
    mean_rate = np.exp(u) / np.exp(u).sum() * TARGET_RATE
    share = mean_rate / TARGET_RATE

    # 2. activity: a two-state Markov chain per client with stationary fraction a_c
    act_s = s["activity"]
    g = 1 / np.sqrt(1 + mean_rate / AGGREGATION_RATE)
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

    # 3. diurnal profile per client (own amplitude and phase), weekly factor
    prof_s = s["profile"]
    alpha = np.exp(AMPLITUDE_JITTER * rng.standard_normal(C))
    shift = PHASE_JITTER_S * rng.standard_normal(C)
    omega = 2 * np.pi / 86400
    t = start[None, :].astype(np.float64) - shift[:, None]
    shape_d = np.zeros((C, W))
    for k, (amp, ph) in enumerate(prof_s["harmonics"], 1):
        # undo the damping of harmonic k by the phase jitter, so the clients' mean has `amp`
        amp_k = amp / (math.exp(-0.5 * (k * omega * PHASE_JITTER_S) ** 2) * math.exp(0.5 * AMPLITUDE_JITTER ** 2))
        shape_d += amp_k * np.cos(k * omega * t + ph)
    shape_d = np.maximum(1 + alpha[:, None] * shape_d, 0.05)
    dow = (start // 86400) % 7
    weekly = np.where(np.isin(dow, prof_s["weekend_days"]), prof_s["weekend_factor"], 1.0)
    weekly = weekly / weekly.mean()
    profile = shape_d * weekly[None, :]

    # 4. rates: profile x AR(1) log-normal noise that shrinks for big clients
    noise_s = s["rate_noise"]
    sd = noise_s["log_sd"] * g
    v = _ar1(rng, (C, W), noise_s["lag1"])
    raw = profile * np.exp(sd[:, None] * v - 0.5 * sd[:, None] ** 2)
    min_rate = act_s["min_active_rate"]

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
    rate = scaled(keep)
    active = keep

    # 5. CVs: a Gaussian copula (client effect + AR(1) within the client) mapped through the
    #    quantiles of the data's rate-weighted CV distribution
    cv_s = s["cv"]
    f_c = cv_s["client_var_share"]
    zcv = (math.sqrt(f_c) * rng.standard_normal(C)[:, None]
           + math.sqrt(1 - f_c) * _ar1(rng, (C, W), cv_s["lag1"]))
    zq = np.array([NormalDist().inv_cdf(p) for p in cv_s["probs"]])
    log_cv = np.interp(zcv, zq, np.array(cv_s["log_quantiles"]))
    log_cv = np.clip(log_cv, math.log(CV_RANGE[0]), math.log(CV_RANGE[1]))

    # 6. law: P(Weibull | cv) logistic, intercept shifted so the active-window share matches
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

    # 7. quantise onto the log grid and fill the law parameters
    b = LOG_STEP
    i_rate = np.maximum(np.round(np.log(rate[active]) / b), math.ceil(math.log(min_rate) / b))
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

    # 8. lengths: per client a base two-piece lognormal per field and 1..4 regimes (shifted
    #    medians) that the client moves between from one length window to the next
    ln = s["lengths"]
    mean6, cov6 = np.array(ln["mean"]), np.array(ln["cov"])
    chol = np.linalg.cholesky(cov6 + 1e-9 * np.eye(6))
    e6 = rng.standard_normal((C, 6))
    # the request-weighted length mix is dominated by a few clients: give the largest
    # TYPICAL_TOP of them the draws nearest the centre (the rest keep random draws)
    k_top = math.ceil(TYPICAL_TOP * C)
    by_size = np.argsort(-share, kind="stable")
    by_dist = np.argsort((e6 ** 2).sum(axis=1), kind="stable")
    e6 = np.concatenate([e6[by_dist[:k_top]], e6[np.sort(by_dist[k_top:])]])[np.argsort(by_size, kind="stable")]
    par = mean6 + e6 @ chol.T
    n_var = 1 + rng.binomial(MAX_VARIANTS - 1, 0.5, size=C)
    wsd = np.array(ln["within_sd"])
    r = ln["within_corr"]
    e = rng.standard_normal((C, MAX_VARIANTS, 2))
    delta = np.stack([e[..., 0], r * e[..., 0] + math.sqrt(1 - r * r) * e[..., 1]], axis=-1) * wsd
    delta[:, 0, :] = 0.0                                           # regime 0 is the client's base
    D = int(lidx.max()) + 1
    stay = rng.random((C, D)) < ln["within_lag1"]
    pick = np.floor(rng.random((C, D)) * n_var[:, None]).astype(np.int64)
    regime = np.zeros((C, D), dtype=np.int64)
    for d in range(1, D):
        regime[:, d] = np.where(stay[:, d], regime[:, d - 1], pick[:, d])

    builder = DistTableBuilder()
    dist_id = np.zeros((C, D, len(LANGUAGE_FIELDS)), dtype=np.int32)
    lo_s, hi_s = LENGTH_SIGMA_RANGE
    for f, field in enumerate(LANGUAGE_FIELDS):
        grid = length_grid(field)
        msd = LENGTH_MEDIAN_SD * math.sqrt(cov6[3 * f, 3 * f])
        base = np.clip(par[:, 3 * f], mean6[3 * f] - msd, mean6[3 * f] + msd)
        slo, shi = np.exp(par[:, 3 * f + 1]), np.exp(par[:, 3 * f + 2])
        slo, shi = np.clip(slo, lo_s, hi_s), np.clip(shi, lo_s, hi_s)
        for c in range(C):
            ids = []
            for k in range(n_var[c]):
                med = min(max(base[c] + delta[c, k, f], 0.0), math.log(grid[-1]))
                p = two_piece_lognormal_pmf(grid, med, slo[c], shi[c])
                ids.append(builder.add(grid, p))
            dist_id[c, :, f] = np.asarray(ids, dtype=np.int32)[regime[c]]

    return ClientPool(category="language", model="builtin", client_ids=np.arange(C, dtype=np.int64),
                      window_start=start, window_len=wlen, window_index=widx, length_index=lidx,
                      rate=out["rate"], cv=out["cv"], law=out["law"], shape=out["shape"], scale=out["scale"],
                      fields=LANGUAGE_FIELDS, dist_id=dist_id, dists=builder.build(),
                      window_size=WINDOW, length_window_size=LENGTH_WINDOW)


# ========================================================================================
# Reporting and CLI
# ========================================================================================
def pool_summary(pool: ClientPool) -> dict:
    """Headline numbers of a pool (used for the builtin pool and, for comparison, the data)."""
    act = pool.active
    agg = pool.aggregate_rate()
    mr = np.where(act, pool.rate, 0.0).mean(axis=1)
    srt = np.sort(mr)[::-1]
    n = len(srt)
    day = 86400 // pool.window_size
    n_days = pool.n_windows // day
    d = agg[: n_days * day].reshape(n_days, day)
    law = pool.law[act]
    return _sig({
        "clients": int(pool.n_clients), "windows": int(pool.n_windows), "length_windows": int(pool.dist_id.shape[1]),
        "distributions": int(len(pool.dists)), "support_points": int(len(pool.dists.values)),
        "mean_rate": float(agg.mean()), "peak_to_mean": float(agg.max() / agg.mean()),
        "min_to_mean": float(agg.min() / agg.mean()),
        "day_over_day_corr": float(np.mean([np.corrcoef(d[i], d[i + 1])[0, 1] for i in range(n_days - 1)]))
        if n_days > 1 else float("nan"),
        "top10_share": float(srt[: math.ceil(0.1 * n)].sum() / srt.sum()),
        "top1_client_share": float(srt[0] / srt.sum()),
        "idle_fraction": float(1 - act.mean()),
        "weibull_share": float((law == LAW_WEIBULL).mean()),
        "rate_weighted_cv_q10_25_50_75_90": _weighted_quantiles(pool.cv[act], pool.rate[act], (0.1, 0.25, 0.5, 0.75, 0.9)),
        "lengths": {f: pool_length_percentiles(pool, f) for f in pool.fields},
    })


def profile_check(pool: ClientPool, summary: dict) -> dict:
    """How the pool's aggregate follows the SUMMARY's daily profile and weekend factor."""
    day = 86400 // pool.window_size
    agg = pool.aggregate_rate()
    n_days = pool.n_windows // day
    d = agg[: n_days * day].reshape(n_days, day)
    harm = summary["profile"]["harmonics"]
    n = np.arange(day)
    target = 1 + sum(a * np.cos(2 * np.pi * k * n / day + ph) for k, (a, ph) in enumerate(harm, 1))
    weekend = np.isin(np.arange(n_days) % 7, summary["profile"]["weekend_days"])
    return _sig({"mean_day_corr_with_profile": float(np.corrcoef(d.mean(axis=0), target)[0, 1]),
                 "mean_day_peak_to_mean": float(d.mean(axis=0).max() / d.mean()),
                 "weekend_to_weekday": float(d[weekend].mean() / d[~weekend].mean())})


def refresh_summary(summary: dict, script: Path = Path(__file__)) -> None:
    text = script.read_text()
    body = "SUMMARY = " + pprint.pformat(summary, sort_dicts=False, width=100, compact=True) + "\n"
    new, n = re.subn(r"(# BEGIN SUMMARY\n).*?(# END SUMMARY\n)", lambda m: m.group(1) + body + m.group(2),
                     text, count=1, flags=re.S)
    if n != 1:
        raise RuntimeError(f"{script}: SUMMARY markers not found")
    script.write_text(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", help="ServeGen data/ folder (with language/m-large ...): recompute the statistics")
    ap.add_argument("--refresh-summary", action="store_true",
                    help="rewrite SUMMARY in this script from --data-dir, then build from it")
    ap.add_argument("--out", default=str(ROOT / "servegen_fast" / "data" / "builtin.parquet"))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)
    from servegen_fast.io.pool_file import save_pool

    summary = SUMMARY
    if args.refresh_summary and not args.data_dir:
        ap.error("--refresh-summary needs --data-dir")
    if args.data_dir:
        t0 = time.perf_counter()
        derived = derive_summary(args.data_dir)
        print(f"# statistics derived from {args.data_dir} in {time.perf_counter() - t0:.1f} s")
        pprint.pprint(derived, sort_dicts=False, width=100, compact=True)
        same = derived == SUMMARY
        print(f"# derived statistics {'equal' if same else 'DIFFER FROM'} the embedded SUMMARY")
        if args.refresh_summary:
            refresh_summary(derived)
            print(f"# SUMMARY rewritten in {Path(__file__).name}")
            summary = derived
        elif not same:
            print("# building from the embedded SUMMARY (use --refresh-summary to adopt the derived one)")
    else:
        print("# statistics used (embedded SUMMARY):")
        pprint.pprint(SUMMARY, sort_dicts=False, width=100, compact=True)
    t0 = time.perf_counter()
    pool = build_pool(summary, args.seed)
    t1 = time.perf_counter()
    path = save_pool(pool, args.out)
    print(f"# built in {t1 - t0:.1f} s; wrote {path} ({path.stat().st_size / 1e6:.3f} MB), seed {args.seed}")
    print("# builtin pool summary:")
    pprint.pprint(pool_summary(pool), sort_dicts=False, width=100)
    pprint.pprint(profile_check(pool, summary), sort_dicts=False, width=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
