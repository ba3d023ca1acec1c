"""ServeGen's ``servegen.utils``: rate functions, sampling from a CDF, writing requests as CSV."""
from __future__ import annotations

import csv
import numbers
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

import numpy as np

from ._columnar import present, window_timestamps
from .clientpool import ClientPool, ClientPoolView, as_view
from .workload_types import ClientWindow

if TYPE_CHECKING:  # only a type hint: the rate functions do not need the generator
    from .construct import Request


def _aggregate_by_timestamp(pool) -> Tuple[List[int], np.ndarray]:
    p = as_view(pool).columnar
    ts = window_timestamps(p)
    if not ts:
        return [], np.zeros(0)
    cols = present(p).any(axis=0)
    return ts, p.aggregate_rate()[cols]


def get_constant_rate_fn(pool: Union[ClientPool, ClientPoolView], target_rate: float) -> Dict[int, float]:
    """{window start: target_rate} for every window the pool (view) lists."""
    ts, _ = _aggregate_by_timestamp(pool)
    return {t: target_rate for t in ts}


def get_scaled_rate_fn(pool: Union[ClientPool, ClientPoolView], scale_factor: float) -> Dict[int, float]:
    """{window start: total client rate x scale_factor}, for windows whose total rate is > 0 (as
    ServeGen: generate_workload then rejects it if the view lists a window with total 0)."""
    ts, total = _aggregate_by_timestamp(pool)
    return {t: float(r) * scale_factor for t, r in zip(ts, total.tolist()) if r > 0}


def get_bounded_rate_fn(pool: Union[ClientPool, ClientPoolView], max_rate: float) -> Dict[int, float]:
    """The pool's own total rates (windows with total > 0), scaled down uniformly if the peak
    exceeds max_rate."""
    ts, total = _aggregate_by_timestamp(pool)
    out = {t: float(r) for t, r in zip(ts, total.tolist()) if r > 0}
    peak = max(out.values(), default=0.0)
    if peak > max_rate:
        factor = max_rate / peak
        out = {t: r * factor for t, r in out.items()}
    return out


def sample_from_cdf(cdf: Tuple[np.ndarray, np.ndarray], n_samples: int = 1,
                    rng: Optional[Union[np.random.RandomState, np.random.Generator]] = None) -> np.ndarray:
    """n_samples values drawn from a (values, cumulative probabilities) pair, e.g. one of get_cdfs().

    rng: a RandomState or Generator (or a seed); None makes a fresh Generator, never the global state.
    """
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)):
        rng = np.random.default_rng(rng)
    values, probs = (np.asarray(x) for x in cdf)
    if len(values) == 0:
        return np.array([])
    idx = np.searchsorted(probs, rng.random(n_samples))
    return values[np.clip(idx, 0, len(values) - 1)]


def save_requests_to_csv(requests: List[Request], filepath: str) -> None:
    """Write requests as CSV: request_id, timestamp, then the data fields of the first request."""
    if not requests:
        raise ValueError("No requests to save")
    keys = list(requests[0].data.keys())
    with open(filepath, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["request_id", "timestamp", *keys])
        for r in requests:
            writer.writerow([r.request_id, r.timestamp, *(r.data.get(k) for k in keys)])


__all__ = ["get_constant_rate_fn", "get_scaled_rate_fn", "get_bounded_rate_fn", "sample_from_cdf",
           "save_requests_to_csv", "ClientPool", "ClientPoolView", "ClientWindow"]
