"""Headline numbers of a pool (printed for the builtin pool; docs/builtin-pool.md compares them
with the data's)."""
from __future__ import annotations

import math

import numpy as np

from servegen_fast.model.fields import LAW_WEIBULL

from servegen_fast.model.pool import ClientPool

from .stats import aggregate_day_corr, pool_length_percentiles, weighted_quantiles
from .summary import sig


def pool_summary(pool: ClientPool) -> dict:
    act = pool.active
    agg = pool.aggregate_rate()
    mr = np.where(act, pool.rate, 0.0).mean(axis=1)
    srt = np.sort(mr)[::-1]
    law = pool.law[act]
    return sig({
        "clients": int(pool.n_clients), "windows": int(pool.n_windows), "length_windows": int(pool.dist_id.shape[1]),
        "distributions": int(len(pool.dists)), "support_points": int(len(pool.dists.values)),
        "mean_rate": float(agg.mean()), "peak_to_mean": float(agg.max() / agg.mean()),
        "min_to_mean": float(agg.min() / agg.mean()),
        "day_over_day_corr": aggregate_day_corr(agg, 86400 // pool.window_size),
        "top10_share": float(srt[: math.ceil(0.1 * len(srt))].sum() / srt.sum()),
        "top1_client_share": float(srt[0] / srt.sum()),
        "idle_fraction": float(1 - act.mean()),
        "weibull_share": float((law == LAW_WEIBULL).mean()),
        "rate_weighted_cv_q10_25_50_75_90": weighted_quantiles(pool.cv[act], pool.rate[act],
                                                               (0.1, 0.25, 0.5, 0.75, 0.9)),
        "lengths": {f: pool_length_percentiles(pool, f) for f in pool.fields},
    })


def profile_check(pool: ClientPool, summary: dict) -> dict:
    """How the pool's aggregate follows the summary's daily profile and weekend factor."""
    day = 86400 // pool.window_size
    agg = pool.aggregate_rate()
    n_days = pool.n_windows // day
    d = agg[: n_days * day].reshape(n_days, day)
    harm = summary["profile"]["harmonics"]
    n = np.arange(day)
    target = 1 + sum(a * np.cos(2 * np.pi * k * n / day + ph) for k, (a, ph) in enumerate(harm, 1))
    weekend = np.isin(np.arange(n_days) % 7, summary["profile"]["weekend_days"])
    return sig({"mean_day_corr_with_profile": float(np.corrcoef(d.mean(axis=0), target)[0, 1]),
                "mean_day_peak_to_mean": float(d.mean(axis=0).max() / d.mean()),
                "weekend_to_weekday": float(d[weekend].mean() / d[~weekend].mean())})
