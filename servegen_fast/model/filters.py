"""ServeGen's named filters of a pool (by CV, by average or maximum length), as a mixin of
`ClientPool`; each is a vectorised predicate handed to `ClientPool.filter`."""
from __future__ import annotations

import numpy as np

from .fields import LAW_IDLE


def length_stat(pool, name: str, stat: str) -> np.ndarray:
    """float64[C, W] statistic of field `name` per window; NaN where there is no distribution."""
    if name not in pool.fields:
        return np.full((pool.n_clients, pool.n_windows), np.nan)
    ids = pool.window_dist_id(name)
    vals = pool.dists.stat(stat)
    out = np.full(ids.shape, np.nan)
    ok = ids >= 0
    out[ok] = vals[ids[ok]]
    return out


class LengthFilters:
    def filter_by_cv(self, min_cv: float, max_cv: float) -> "LengthFilters":
        return self.filter(lambda p: (p.law != LAW_IDLE) & (p.cv >= min_cv) & (p.cv <= max_cv))

    def filter_by_avg_input_len(self, min_len: float, max_len: float) -> "LengthFilters":
        return self._filter_stat("input_tokens", "avg", min_len, max_len)

    def filter_by_avg_output_len(self, min_len: float, max_len: float) -> "LengthFilters":
        return self._filter_stat("output_tokens", "avg", min_len, max_len)

    def filter_by_max_input_len(self, max_len: float) -> "LengthFilters":
        return self._filter_stat("input_tokens", "max", -np.inf, max_len)

    def filter_by_max_output_len(self, max_len: float) -> "LengthFilters":
        return self._filter_stat("output_tokens", "max", -np.inf, max_len)

    def _filter_stat(self, name: str, stat: str, lo: float, hi: float) -> "LengthFilters":
        def pred(p) -> np.ndarray:
            v = length_stat(p, name, stat)
            with np.errstate(invalid="ignore"):
                return (v >= lo) & (v <= hi)  # NaN (no distribution) compares False
        return self.filter(pred)
