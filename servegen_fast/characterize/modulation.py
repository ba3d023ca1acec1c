"""Fit of the intra-window modulation (kernels/modulation.py) per client, against the log's
index-of-dispersion curve and IAT CV (see docs/fit-analyze.md).

The model: each (client, window) keeps its rate, law and count; inside the window a keyed
log-normal intensity with log-standard-deviation sigma, piecewise constant over segments of
tau seconds, warps the arrivals. A window's measured IAT CV already holds that burstiness:
with intensity weights w, the IATs are a mixture of base IATs scaled by 1/w, weighted by w,
so 1 + CV² = E[w] E[1/w] (1 + CV_base²) = exp(sigma²) (1 + CV_base²). The base law's CV is
therefore lowered to CV_base = sqrt((1 + CV²) exp(−sigma²) − 1), and sigma is capped per
window so that CV_base stays at least BASE_CV_FLOOR (windows with a low CV get less or no
modulation). An Exponential window that gets modulated becomes Gamma with that CV.

Choice per client with at least MIN_REQUESTS requests (the MAX_CLIENTS busiest of them; the
others keep plain windows): every (sigma, tau) of the grid and the
plain windows are generated (servegen mode, the cpu backend, each of the seeds FIT_SEEDS) and
scored by E = mean over the scales s of (ln IDC_gen(s) − ln IDC_log(s))² + CV_WEIGHT (ln CV_gen − ln CV_log)²,
averaged over the seeds,
with the scales of IDC_SCALES at least 3 × the log's clock step and at most half a window.
The best modulated candidate is kept if E < IMPROVEMENT × E(plain) and the gain
E(plain) − E is more than NOISE_FACTOR × the noise: the log is one realisation, so even a right
model shows an error of about the spread between its own realisations, noise = the smaller,
for the plain windows and for the best candidate, of the mean over pairs of seeds of
mean_s (ln IDC_a(s) − ln IDC_b(s))². Otherwise the client keeps ServeGen's plain windows
(a log made by plain windows stays plain: tests/test_fit.py).
"""
from __future__ import annotations

import numpy as np

from . import laws as L
from ..kernels import philox as px
from .analyze import index_of_dispersion
from ..model.pool import ClientPool

SIGMAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.55, 0.75, 1.0, 1.4, 2.0, 2.8)
TAUS = (3.0, 10.0, 30.0, 60.0, 120.0, 300.0)
IDC_SCALES = (1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 300.0)
MIN_REQUESTS = 500
# The candidates' traces keep arrival stream 1 (kernels/codes.py), so a log fits to the same pool
# whatever stream the generator defaults to.
FIT_ARRIVAL_STREAM = 1
MAX_CLIENTS = 16  # the busiest clients only: each costs (1 + grid) x seeds generated traces
IMPROVEMENT = 0.8
BASE_CV_FLOOR = 0.3
COARSE_TIES = 0.5
CV_WEIGHT = 0.25
NOISE_FACTOR = 4.0
FIT_SEEDS = (0x5EED_F17, 0x5EED_F18, 0x5EED_F19)  # not generation's default seed 0: the choice must not tune to that trace


def clock_step(t: np.ndarray) -> float:
    """The log's effective clock step: the smallest positive gap between distinct timestamps."""
    d = np.diff(np.unique(t))
    return float(d.min()) if len(d) else 0.0


def coarse_clock(t: np.ndarray) -> float | None:
    """The clock step of a log that records time in coarse ticks (at least COARSE_TIES of its
    inter-arrival times are ties, e.g. Mooncake's 3 s ticks): the median gap between distinct
    timestamps, to the millisecond; None for a fine clock."""
    gaps = np.diff(t)
    if len(gaps) == 0 or np.mean(gaps <= 0.0) < COARSE_TIES:
        return None
    d = np.diff(np.unique(t))
    return float(np.round(np.median(d), 3)) if len(d) else None


def spread_ticks(t: np.ndarray, step: float) -> np.ndarray:
    """The n requests of one tick T placed at T + step × (the sorted draws of n keyed uniforms):
    within a tick the order of arrival is unknown, so the fit reads inter-arrival laws as if the
    requests had come at random times during it (its ties are not zero gaps of the process)."""
    u = px.uniform_np(np.uint64(0), np.uint64(0), np.uint64(0), px.FIELD_POPULATION,
                      np.arange(len(t), dtype=np.uint64))
    tick = np.cumsum(np.r_[True, t[1:] != t[:-1]])  # ticks are runs of equal times (the log is sorted)
    return t + step * u[np.lexsort((u, tick))]


def scales_for(step: float, window: float) -> list[float]:
    return [s for s in IDC_SCALES if s >= 3.0 * step and s <= window / 2.0]


def compensate(law, cv, sigma):
    """(law, cv, shape, sigma per window) of the base process under modulation sigma (see above)."""
    cv = np.asarray(cv, np.float64)
    total = 1.0 + cv * cv
    cap = np.sqrt(np.maximum(np.log(total / (1.0 + BASE_CV_FLOOR ** 2)), 0.0))
    sw = np.minimum(sigma, cap)
    cb = np.sqrt(np.maximum(total * np.exp(-sw * sw) - 1.0, BASE_CV_FLOOR ** 2))
    cb = np.where(sw > 0, cb, cv)
    law2 = np.where((sw > 0) & (law == L.LAW_EXPONENTIAL), L.LAW_GAMMA, law).astype(np.uint8)
    return law2, cb, L.moment_shape(law2, cb), sw


def fit_modulation(pool: ClientPool, t: np.ndarray, ci: np.ndarray, labels=None) -> tuple[ClientPool, list]:
    """`pool` with mod_sigma/mod_tau (and the compensated base laws) of the clients that the
    criterion modulates; and one report row per client tried."""
    from ..sample.generate import generate_table

    step = clock_step(t)
    scales = scales_for(step, pool.window_size)
    n_req = np.bincount(ci, minlength=pool.n_clients)
    sigma = np.zeros(pool.rate.shape)
    tau = np.full(pool.rate.shape, TAUS[0])
    law, cv, shape = pool.law.copy(), pool.cv.copy(), pool.shape.copy()
    rows = []
    if not scales:
        return pool, rows
    eligible = np.flatnonzero(n_req >= MIN_REQUESTS)
    busiest = eligible[np.argsort(-n_req[eligible], kind="stable")[:MAX_CLIENTS]]
    for c in np.sort(busiest):
        tc = t[ci == c]
        target = np.log([index_of_dispersion(tc, pool.duration, s) for s in scales])
        cv_log = np.log(_cv(np.diff(tc)))
        one = pool.select_clients(np.array([c]))
        act = one.active[0]

        def score(s, tu, sims=None):
            if s == 0:
                cand = one
            else:
                lw, cb, sh, sw = compensate(one.law[0], one.cv[0], s)
                cand = one.replace(law=np.where(act, lw, one.law[0])[None], cv=np.where(act, cb, one.cv[0])[None],
                                   shape=np.where(act, sh, one.shape[0])[None],
                                   mod_sigma=np.where(act, sw, 0.0)[None], mod_tau=np.full((1, one.n_windows), tu))
            err = 0.0
            for seed in FIT_SEEDS:
                g = generate_table(cand, seed=seed, mode="servegen", correlation="independent", backend="cpu",
                                   arrival_stream=FIT_ARRIVAL_STREAM)
                tg = g.column("timestamp").to_numpy()
                idc = np.log(np.maximum([index_of_dispersion(tg, one.duration, s_) for s_ in scales], 1e-9))
                if sims is not None:
                    sims.append(idc)
                e_cv = CV_WEIGHT * (np.log(_cv(np.diff(tg))) - cv_log) ** 2
                err += float(np.mean((idc - target) ** 2) + e_cv) / len(FIT_SEEDS)
            return err if np.isfinite(err) else np.inf

        sims, best_sims = [], []
        plain = score(0, 0, sims)
        best = min(((score(s, tu), s, tu) for s in SIGMAS for tu in TAUS), key=lambda r: r[0])
        score(best[1], best[2], best_sims)
        noise = min(_spread(sims), _spread(best_sims))
        chosen = best[0] < IMPROVEMENT * plain and plain - best[0] > NOISE_FACTOR * noise
        rows.append({"client": labels[c] if labels is not None else int(pool.client_ids[c]),
                     "requests": int(n_req[c]), "plain_error": plain, "noise": noise, "best_error": best[0],
                     "sigma": best[1], "tau": best[2], "modulated": bool(chosen)})
        if chosen:
            lw, cb, sh, sw = compensate(pool.law[c], pool.cv[c], best[1])
            a = pool.active[c]
            law[c], cv[c], shape[c] = np.where(a, lw, law[c]), np.where(a, cb, cv[c]), np.where(a, sh, shape[c])
            sigma[c], tau[c] = np.where(a, sw, 0.0), best[2]
    if not (sigma > 0).any():
        return pool, rows
    return pool.replace(law=law, cv=cv, shape=shape, mod_sigma=sigma, mod_tau=tau), rows


def _spread(sims: list) -> float:
    """Mean over pairs of realisations of the mean squared difference of their log IDC curves."""
    return float(np.mean([np.mean((a - b) ** 2) for i, a in enumerate(sims) for b in sims[i + 1:]]))


def _cv(v: np.ndarray) -> float:
    return float(v.std() / v.mean()) if len(v) > 1 and v.mean() > 0 else float("nan")
