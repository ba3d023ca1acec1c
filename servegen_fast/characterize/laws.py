"""Inter-arrival laws fitted to many groups of samples at once (one group = one client window).

Samples arrive as one flat array sorted by group, with `offsets` (int64[G + 1]) marking the
groups; every group must hold at least two samples. All three laws are scale families, so
each group is divided by its mean first: the shapes, log-likelihood differences and KS
distances do not depend on the scale, and the numbers stay well conditioned.

* Exponential: no shape. Gamma: shape by maximum likelihood (the closed-form start of
  Minka / Choi–Wette, then Newton on log k). Weibull: shape by maximum likelihood (Newton on
  log c of the profile score, started at the log-moment estimate).
* The best law is the one with the lowest AIC (2·parameters − 2·log-likelihood), so the
  Exponential wins ties with its one parameter less.
* Moment shapes: Gamma k = 1/cv², Weibull c with CV(c) = cv (bisection on log c).
"""
from __future__ import annotations

import numpy as np

from ..model.fields import LAW_EXPONENTIAL, LAW_GAMMA, LAW_WEIBULL
from ..model.special import digamma, gammainc, gammaln, trigamma

CV_FLOOR = 1e-3           # as sample.plan.renewal_params: Gamma shape at most 1e6
WEIBULL_SHAPE_RANGE = (0.05, 500.0)
GAMMA_SHAPE_MAX = 1e6
LAWS = (LAW_EXPONENTIAL, LAW_GAMMA, LAW_WEIBULL)
_N_PARAMS = {LAW_EXPONENTIAL: 1, LAW_GAMMA: 2, LAW_WEIBULL: 2}


class Groups:
    """Flat samples sorted by group, with per-group sums by `np.add.reduceat`."""

    def __init__(self, x: np.ndarray, offsets: np.ndarray):
        self.x = np.asarray(x, dtype=np.float64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.n = np.diff(self.offsets)
        if len(self.n) and self.n.min() < 2:
            raise ValueError("every group needs at least two samples")
        self.gid = np.repeat(np.arange(len(self.n)), self.n)

    def sum(self, v: np.ndarray) -> np.ndarray:
        return np.add.reduceat(v, self.offsets[:-1]) if len(self.n) else np.zeros(0)

    def max(self, v: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(v, self.offsets[:-1]) if len(self.n) else np.zeros(0)

    def mean(self, v: np.ndarray) -> np.ndarray:
        return self.sum(v) / self.n

    def each(self, per_group: np.ndarray) -> np.ndarray:
        return per_group[self.gid]


def moments(g: Groups) -> tuple[np.ndarray, np.ndarray]:
    """(mean, cv) per group; cv uses the population standard deviation, as ServeGen's data does."""
    mean = g.mean(g.x)
    var = g.mean((g.x - g.each(mean)) ** 2)
    cv = np.sqrt(var) / np.where(mean > 0, mean, 1.0)
    return mean, np.where(mean > 0, cv, 0.0)


def gamma_mle_shape(mean_log_norm: np.ndarray) -> np.ndarray:
    """Gamma MLE shape from s = log(mean) − mean(log x) (Newton on log k from the closed form)."""
    s = np.maximum(np.asarray(mean_log_norm, dtype=np.float64), 1e-12)
    k = (3.0 - s + np.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
    y = np.log(np.minimum(k, GAMMA_SHAPE_MAX))
    for _ in range(20):
        k = np.exp(y)
        f = np.log(k) - digamma(k) - s
        fp = 1.0 - k * trigamma(k)  # d f / d log k (negative)
        y = np.clip(y - np.clip(f / fp, -2.0, 2.0), -30.0, np.log(GAMMA_SHAPE_MAX))
    return np.exp(y)


def weibull_mle_shape(g: Groups, logx: np.ndarray) -> np.ndarray:
    """Weibull MLE shape: the root c of Σx^c log x / Σx^c − 1/c − mean(log x) (increasing in c)."""
    mlog = g.mean(logx)
    sd = np.sqrt(np.maximum(g.mean((logx - g.each(mlog)) ** 2), 1e-300))
    # log-moment start: the sd of log x for Weibull(c) is π / (c √6)
    y = np.log(np.clip(np.pi / (np.sqrt(6.0) * sd), *WEIBULL_SHAPE_RANGE))
    lo, hi = np.log(WEIBULL_SHAPE_RANGE[0]), np.log(WEIBULL_SHAPE_RANGE[1])
    for _ in range(40):
        c = np.exp(y)
        e = c[g.gid] * logx
        w = np.exp(e - g.each(g.max(e)))  # x^c up to a per-group factor that cancels
        s0, s1, s2 = g.sum(w), g.sum(w * logx), g.sum(w * logx * logx)
        m1 = s1 / s0
        h = m1 - 1.0 / c - mlog
        dh = s2 / s0 - m1 * m1 + 1.0 / (c * c)  # d h / d c > 0
        step = np.clip(h / (dh * c), -1.0, 1.0)  # Newton in log c, at most a factor e per step
        y = np.clip(y - step, lo, hi)
        if np.all(np.abs(step) < 1e-10):
            break
    return np.exp(y)


def weibull_cv(c) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.sqrt(np.expm1(gammaln(1 + 2 / c) - 2 * gammaln(1 + 1 / c)))


def weibull_shape_for_cv(cv) -> np.ndarray:
    """Weibull shape whose CV is `cv` (CV decreases in the shape), clamped to WEIBULL_SHAPE_RANGE."""
    target = np.log1p(np.maximum(np.asarray(cv, dtype=np.float64), CV_FLOOR) ** 2)
    lo = np.full(target.shape, np.log(WEIBULL_SHAPE_RANGE[0]))
    hi = np.full(target.shape, np.log(WEIBULL_SHAPE_RANGE[1]))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        c = np.exp(mid)
        too_variable = gammaln(1 + 2 / c) - 2 * gammaln(1 + 1 / c) > target
        lo = np.where(too_variable, mid, lo)
        hi = np.where(too_variable, hi, mid)
    return np.exp(0.5 * (lo + hi))


def loglik(law: int, g: Groups, logx: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Log-likelihood per group of mean-normalised samples at the law's MLE scale for `shape`."""
    n = g.n.astype(np.float64)
    slog = g.sum(logx)
    if law == LAW_EXPONENTIAL:
        return -n  # rate 1 at mean 1
    if law == LAW_GAMMA:
        k = shape  # MLE scale 1/k at mean 1
        return (k - 1) * slog - k * n + n * (k * np.log(k) - gammaln(k))
    e = shape[g.gid] * logx  # Weibull: MLE λ^c = mean(x^c), so Σ (x/λ)^c = n
    top = g.max(e)
    log_mean_xc = np.log(g.mean(np.exp(e - g.each(top)))) + top
    return n * np.log(shape) - n * log_mean_xc + (shape - 1) * slog - n


def cdf(law: np.ndarray, shape: np.ndarray, x: np.ndarray) -> np.ndarray:
    """CDF at x of each law with mean 1 (arrays broadcast elementwise)."""
    out = 1.0 - np.exp(-x)
    gm = law == LAW_GAMMA
    if gm.any():
        out[gm] = gammainc(shape[gm], shape[gm] * x[gm])
    wb = law == LAW_WEIBULL
    if wb.any():
        c = shape[wb]
        lam = np.exp(-gammaln(1 + 1 / c))
        out[wb] = -np.expm1(-(x[wb] / lam) ** c)
    return out


def ks_distance(g: Groups, law: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Kolmogorov–Smirnov distance per group between its mean-normalised samples and its law."""
    if len(g.n) == 0:
        return np.zeros(0)
    mean = g.mean(g.x)
    z = g.x / g.each(np.where(mean > 0, mean, 1.0))
    order = np.lexsort((z, g.gid))
    z = z[order]
    rank = np.arange(len(z)) - g.each(g.offsets[:-1])
    n = g.each(g.n).astype(np.float64)
    f = cdf(g.each(law), g.each(shape), z)
    return g.max(np.maximum((rank + 1) / n - f, f - rank / n))


def fit_laws(g: Groups, floor: np.ndarray | float = 0.0) -> dict:
    """Fit the three laws to every group; pick the best by AIC.

    `floor` (per sample or scalar, in the samples' unit) lifts samples below it before the
    logarithms (ties in a log with a coarse clock). Returns per group: mean, cv, law (LAW_*
    code of the best), mle_shape (of the best law; 1 for Exponential), and the Gamma and
    Weibull MLE shapes and the log-likelihoods of all three.
    """
    mean, cv = moments(g)
    lifted = np.maximum(g.x, floor)
    lmean = g.mean(lifted)
    logx = np.log(lifted / g.each(lmean))
    k = gamma_mle_shape(-g.mean(logx))
    c = weibull_mle_shape(g, logx)
    ll = {LAW_EXPONENTIAL: loglik(LAW_EXPONENTIAL, g, logx, np.ones_like(k)),
          LAW_GAMMA: loglik(LAW_GAMMA, g, logx, k),
          LAW_WEIBULL: loglik(LAW_WEIBULL, g, logx, c)}
    aic = np.stack([2 * _N_PARAMS[law] - 2 * ll[law] for law in LAWS])
    best = np.asarray(LAWS, dtype=np.uint8)[np.argmin(aic, axis=0)]
    mle_shape = np.where(best == LAW_GAMMA, k, np.where(best == LAW_WEIBULL, c, 1.0))
    return {"mean": mean, "cv": cv, "law": best, "mle_shape": mle_shape, "gamma_shape": k, "weibull_shape": c,
            "loglik": ll}


def moment_shape(law: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """Shape of each law with the given CV (Gamma 1/cv², Weibull by bisection, Exponential 1)."""
    cv = np.maximum(np.asarray(cv, dtype=np.float64), CV_FLOOR)
    out = np.ones(cv.shape)
    gm, wb = law == LAW_GAMMA, law == LAW_WEIBULL
    out[gm] = 1.0 / cv[gm] ** 2
    out[wb] = weibull_shape_for_cv(cv[wb])
    return out


def law_cv(law: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """CV of each law with the given shape."""
    out = np.ones(np.shape(shape))
    gm, wb = law == LAW_GAMMA, law == LAW_WEIBULL
    out[gm] = 1.0 / np.sqrt(shape[gm])
    out[wb] = weibull_cv(shape[wb])
    return out


def law_scale(law: np.ndarray, shape: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Scale (seconds) of each law with the given shape and mean."""
    out = np.array(mean, dtype=np.float64, copy=True)
    gm, wb = law == LAW_GAMMA, law == LAW_WEIBULL
    out[gm] = mean[gm] / shape[gm]
    out[wb] = mean[wb] / np.exp(gammaln(1 + 1 / shape[wb]))
    return out
