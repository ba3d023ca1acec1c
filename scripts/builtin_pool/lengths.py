"""Step 8 of the builtin pool: length distributions.

Per client a base two-piece lognormal per field and 1..MAX_VARIANTS regimes (shifted medians)
that the client moves between from one length window to the next, each placed on a geometric
integer grid with probabilities rounded to multiples of 2**-PROB_BITS.
"""
from __future__ import annotations

import math

import numpy as np

from servegen_fast.model.distributions import DistTable, DistTableBuilder
from servegen_fast.model.fields import LANGUAGE_FIELDS

from .design import (LENGTH_GRID, LENGTH_MEDIAN_SD, LENGTH_SIGMA_RANGE, MAX_VARIANTS, N_CLIENTS, PROB_BITS,
                     TYPICAL_TOP)

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def draw_lengths(ln: dict, rng: np.random.Generator, share: np.ndarray, n_length_windows: int
                 ) -> tuple[np.ndarray, DistTable]:
    """(dist_id [C, D, 2], table) from summary["lengths"]; `share` is each client's traffic share."""
    C, D = N_CLIENTS, n_length_windows
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
    return dist_id, builder.build()


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
