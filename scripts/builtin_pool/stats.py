"""Statistics shared by the derivation (of ServeGen's pools) and the report (of the builtin pool)."""
from __future__ import annotations

import numpy as np

from servegen_fast.model.pool import ClientPool


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs) -> list:
    """First value whose cumulative weight share reaches q, for each q."""
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
    probs[t.offsets[:-1]] = t.cdf[t.offsets[:-1]]   # each distribution starts from 0
    pw = probs * np.repeat(weight, np.diff(t.offsets))
    out = weighted_quantiles(t.values, pw, qs)
    res = {f"p{int(round(q * 100))}": v for q, v in zip(qs, out)}
    res["mean"] = float((weight * t.stat("avg")).sum() / weight.sum())
    return res


def aggregate_day_corr(agg: np.ndarray, day: int) -> float:
    """Mean correlation of the aggregate rate between consecutive whole days."""
    n_days = len(agg) // day
    d = agg[: n_days * day].reshape(n_days, day)
    return float(np.mean([np.corrcoef(d[i], d[i + 1])[0, 1] for i in range(n_days - 1)])) \
        if n_days > 1 else float("nan")


def lag1(resid: np.ndarray) -> float:
    """Lag-1 correlation along axis 1 of a [C, T] array with NaN gaps, pooled over rows."""
    a, b = resid[:, 1:], resid[:, :-1]
    ok = ~np.isnan(a) & ~np.isnan(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def logistic_fit(x: np.ndarray, n: np.ndarray, k: np.ndarray, iters: int = 50):
    """Binomial logistic regression logit p = b0 + b1 x on grouped data (IRLS)."""
    beta = np.zeros(2)
    X = np.column_stack([np.ones_like(x), x])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ beta)))
        w = n * p * (1 - p) + 1e-12
        z = X @ beta + (k - n * p) / w
        beta = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * z))
    return beta
