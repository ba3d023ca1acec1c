"""Summary statistics of ServeGen's language pools (docs/builtin-pool.md states each one).

The pools are read by the package's own reader, `read_servegen`. Rates, activity, the daily
shape, CVs and the law mix come from every trace file, also of clients without a dataset
file (which `read_servegen` leaves out); the length statistics from clients with one.
"""
from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from statistics import NormalDist

import numpy as np

from servegen_fast.io.servegen_format import read_servegen
from servegen_fast.model.distributions import DistTable
from servegen_fast.model.fields import LANGUAGE_FIELDS, LAW_IDLE, LAW_WEIBULL
from servegen_fast.model.pool import ClientPool

from .design import CV_PROBS, LENGTH_SIGMA_RANGE, MODELS, Z95
from .stats import aggregate_day_corr, lag1, logistic_fit, pool_length_percentiles, weighted_quantiles
from .summary import sig

SOURCE = "ServeGen language/{m-large,m-mid,m-small} (github.com/alibaba/ServeGen, Apache-2.0)"


def read_model(data_dir: str | Path, name: str) -> tuple[ClientPool, np.ndarray]:
    """(pool of every client of `name`, bool mask of the clients that have a dataset file).

    `read_servegen` reads a folder of links to the model's files in which each client without
    a dataset file gets an empty one ({}: no length windows), so its trace is read too.
    """
    src = Path(data_dir) / name
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a ServeGen model directory (expected <data>/{name})")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / name            # same <category>/<model> names: the reader infers them
        model.mkdir(parents=True)
        with_file = []
        for f in src.iterdir():
            (model / f.name).symlink_to(f.resolve())
        for trace in src.glob("chunk-*-trace.csv"):
            dataset = trace.name.replace("-trace.csv", "-dataset.json")
            if (src / dataset).exists():
                with_file.append(int(trace.name.split("-")[1]))
            else:
                (model / dataset).write_text("{}")
        pool = read_servegen(model)
    return pool, np.isin(pool.client_ids, with_file)


def derive_summary(data_dir: str | Path) -> dict:
    """The summary statistics (4 significant digits) of ServeGen's language pools under `data_dir`."""
    traces, with_lengths = {}, {}
    for name in MODELS:
        pool, has = read_model(data_dir, name)
        traces[name] = pool
        with_lengths[name] = pool.select_clients(has)
    size, activity = _sizes_and_activity(traces)
    profile, noise = _profile_and_noise(traces)
    return sig({"source": SOURCE, "client_size": size, "activity": activity, "profile": profile,
                "rate_noise": noise, "cv": _cv(traces), "law": _law(traces), "lengths": _lengths(with_lengths),
                "reference": _reference(traces, with_lengths)})


def _active(pool: ClientPool) -> np.ndarray:
    return pool.law != LAW_IDLE   # a window with a pattern (ServeGen's empty pattern marks idle)


def _centred_log_mean_rate(pool: ClientPool):
    """(mask of clients with traffic, their log mean rate minus its mean over those clients)."""
    mr = pool.rate.mean(axis=1)
    pos = mr > 0
    return pos, np.log(mr[pos]) - np.log(mr[pos]).mean()


def _sizes_and_activity(traces: dict) -> tuple[dict, dict]:
    """Lognormal fit of client mean rates; activity logistic in the centred log mean rate,
    its Markov persistence and the smallest active rate."""
    log_u, frac, rho = [], [], []
    for pool in traces.values():
        act = _active(pool)
        pos, u = _centred_log_mean_rate(pool)
        log_u.append(u)
        frac.append(act[pos].mean(axis=1))
        busy = act.mean(axis=1)
        for c in np.flatnonzero(pos & (busy > 0.02) & (busy < 0.98)):
            x = act[c].astype(float)
            rho.append(np.corrcoef(x[1:], x[:-1])[0, 1])
    u_all = np.concatenate(log_u)
    size = {"log_sd": float(u_all.std()), "log_sd_per_model": {m: float(u.std()) for m, u in zip(traces, log_u)}}
    n_w = next(iter(traces.values())).n_windows
    a = np.clip(np.concatenate(frac), 0.5 / n_w, 1 - 0.5 / n_w)
    logit = np.log(a / (1 - a))
    beta = np.polyfit(u_all, logit, 1)
    resid = logit - np.polyval(beta, u_all)
    min_rate = min(float(p.rate[_active(p)].min()) for p in traces.values())
    activity = {"logit_intercept": float(beta[1]), "logit_slope": float(beta[0]),
                "logit_resid_sd": float(resid.std()), "lag1": float(np.median(rho)), "min_active_rate": min_rate}
    return size, activity


def _profile_and_noise(traces: dict) -> tuple[dict, dict]:
    """Daily profile (4 harmonics), weekly low pair, and the within-client log-rate noise."""
    profiles, dailies, resid_all, resid_lag = [], [], [], []
    for pool in traces.values():
        rate, act = pool.rate, _active(pool)
        day = 86400 // pool.window_size
        n_days = pool.n_windows // day
        mr = rate.mean(axis=1)
        # the mean over clients (active in > 20% of windows) of each one's normalised rate, by day
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
    prof = np.mean(profiles, axis=0)
    spec = np.fft.rfft(prof) / len(prof)
    harmonics = [[float(2 * abs(spec[k])), float(np.angle(spec[k]))] for k in range(1, 5)]
    dow = np.mean(dailies, axis=0)[: (n_days // 7) * 7].reshape(-1, 7).mean(axis=0)
    pair = min(range(7), key=lambda i: dow[i] + dow[(i + 1) % 7])
    weekend = sorted([pair, (pair + 1) % 7])
    weekday = [i for i in range(7) if i not in weekend]
    fitted = 1 + sum(a * np.cos(2 * np.pi * k * np.arange(day) / day + ph) for k, (a, ph) in enumerate(harmonics, 1))
    profile = {"harmonics": harmonics, "weekend_days": weekend,
               "weekend_factor": float(dow[weekend].mean() / dow[weekday].mean()),
               "fit_corr": float(np.corrcoef(fitted, prof)[0, 1]),
               "peak_to_mean": float(prof.max()), "min_to_mean": float(prof.min())}
    noise = {"log_sd": float(np.concatenate(resid_all).std()), "lag1": float(np.mean([lag1(r) for r in resid_lag]))}
    return profile, noise


def _cv(traces: dict) -> dict:
    """Quantiles of the pooled rate-weighted log-CV distribution (each model weighs 1 in total); in
    normal scores z = Phi^-1(F(log cv)), the share of variance between clients and the lag-1 correlation."""
    vals, wts, per_client = [], [], []
    for pool in traces.values():
        rate, cv, act = pool.rate, pool.cv, _active(pool)
        vals.append(np.log(cv[act]))
        wts.append(rate[act] / rate[act].sum())
        per_client.append(np.where(act, np.log(np.where(act, cv, 1.0)), np.nan)[act.sum(axis=1) >= 6])
    qs = weighted_quantiles(np.concatenate(vals), np.concatenate(wts), CV_PROBS)
    zq = np.array([NormalDist().inv_cdf(p) for p in CV_PROBS])
    between, within, lags = [], [], []
    for lc in per_client:
        z = np.interp(lc, qs, zq)                          # NaN (idle) stays NaN
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(z, axis=1)
        between.append(m)
        within.append((z - m[:, None])[~np.isnan(z)])
        lags.append(z - m[:, None])
    vb, vw = np.concatenate(between).var(), np.concatenate(within).var()
    return {"probs": list(CV_PROBS), "log_quantiles": qs, "client_var_share": float(vb / (vb + vw)),
            "lag1": float(np.mean([lag1(r) for r in lags]))}


def _law(traces: dict) -> dict:
    """Weibull share among active windows, and its logistic dependence on log CV (5% bins)."""
    xs = [np.log(p.cv[_active(p)]) for p in traces.values()]
    ys = [p.law[_active(p)] == LAW_WEIBULL for p in traces.values()]
    x, y = np.concatenate(xs), np.concatenate(ys)
    bins = np.round(x / 0.05).astype(np.int64)
    ub, inv = np.unique(bins, return_inverse=True)
    n = np.bincount(inv).astype(float)
    k = np.bincount(inv, weights=y.astype(float))
    b0, b1 = logistic_fit(ub * 0.05, n, k)
    return {"weibull_share": float(y.mean()), "logit_intercept": float(b0), "logit_slope": float(b1),
            "weibull_share_per_model": {m: float(v.mean()) for m, v in zip(traces, ys)}}


def _lengths(pools: dict) -> dict:
    """Per client and field a two-piece lognormal (median, lower and upper log-sd from p05/p95 of
    its distributions, medians over its active length windows); a joint Gaussian of the six
    parameters; and how the log median moves within a client over time."""
    params, wcorr = [], []
    within, wlag = ({f: [] for f in LANGUAGE_FIELDS} for _ in range(2))
    for pool in pools.values():
        # ServeGen's PDFs are request frequencies: an exact tie (half of the requests at or below a
        # value) lands a rounding error off q (0.49999999999999994). On the cdf rounded to 12
        # decimals a tie reaches q, as in exact arithmetic.
        t = pool.dists
        t = DistTable(t.values, np.round(t.cdf, 12), t.offsets)
        q05, q50, q95 = (np.log(np.maximum(t.stat(s), 1.0)) for s in ("p05", "p50", "p95"))
        n_len = pool.dist_id.shape[1]
        per = pool.n_windows // n_len
        act_len = pool.active[:, : n_len * per].reshape(pool.n_clients, n_len, per).any(axis=2)
        cols, res = [], {}
        for f in LANGUAGE_FIELDS:
            ids = pool.dist_id[:, :, pool.field_index(f)]
            l50 = np.where(act_len, q50[ids], np.nan)
            slo = np.where(act_len, np.maximum((q50 - q05)[ids] / Z95, LENGTH_SIGMA_RANGE[0]), np.nan)
            shi = np.where(act_len, np.maximum((q95 - q50)[ids] / Z95, LENGTH_SIGMA_RANGE[0]), np.nan)
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
    return {"names": [f"{f}.{p}" for f in LANGUAGE_FIELDS for p in ("log_median", "log_sigma_lo", "log_sigma_hi")],
            "mean": P.mean(axis=0).tolist(), "cov": np.cov(P, rowvar=False).tolist(),
            "within_sd": [float(np.concatenate(within[f]).std()) for f in LANGUAGE_FIELDS],
            "within_corr": float(np.corrcoef(wi, wo)[0, 1]),
            "within_lag1": float(np.mean([lag1(r) for f in LANGUAGE_FIELDS for r in wlag[f]])),
            "clients": int(len(P))}


def _reference(traces: dict, with_lengths: dict) -> dict:
    """Per-model numbers kept for comparison only (the pool is not drawn from them)."""
    ref: dict = {"models": list(traces), "clients": {}, "clients_with_lengths": {}, "mean_rate_all_traces": {},
                 "mean_rate_with_lengths": {}, "top10_share": {}, "idle_fraction": {}, "peak_to_mean": {},
                 "aggregate_day_corr": {}, "rate_weighted_cv_q": {}}
    for name, pool in traces.items():
        rate, act = pool.rate, _active(pool)
        agg = rate.sum(axis=0)
        srt = np.sort(rate.mean(axis=1))[::-1]
        ref["clients"][name] = int(pool.n_clients)
        ref["clients_with_lengths"][name] = int(with_lengths[name].n_clients)
        ref["mean_rate_all_traces"][name] = float(agg.mean())
        ref["mean_rate_with_lengths"][name] = float(with_lengths[name].aggregate_rate().mean())
        ref["top10_share"][name] = float(srt[:math.ceil(0.1 * pool.n_clients)].sum() / srt.sum())
        ref["idle_fraction"][name] = float(1 - act.mean())
        ref["peak_to_mean"][name] = float(agg.max() / agg.mean())
        ref["aggregate_day_corr"][name] = aggregate_day_corr(agg, 86400 // pool.window_size)
        ref["rate_weighted_cv_q"][name] = weighted_quantiles(pool.cv[act], rate[act], (0.1, 0.25, 0.5, 0.75, 0.9))
    ref["length_percentiles"] = {name: {f: pool_length_percentiles(pool, f) for f in LANGUAGE_FIELDS}
                                 for name, pool in with_lengths.items()}
    return ref
