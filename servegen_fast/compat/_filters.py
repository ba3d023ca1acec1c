"""The filters a `ClientPoolView` records: ServeGen's built-in ones and vectorised predicates.

Each applies to a columnar pool in one vectorised step; a built-in filter is also callable on
one `ClientWindow` with ServeGen's semantics, as ServeGen's own filter functions are.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..model.pool import ClientPool
from .workload_types import ClientWindow


class BuiltinFilter:
    """`ClientPool.<method>(*args)` of the columnar pool, and ServeGen's per-window predicate."""

    def __init__(self, method: str, *args):
        self.method, self.args = method, args

    def apply(self, pool: ClientPool) -> ClientPool:
        return getattr(pool, self.method)(*self.args)

    def __call__(self, window: ClientWindow) -> bool:
        if self.method == "filter_by_cv":
            return window.cv is not None and self.args[0] <= window.cv <= self.args[1]
        name = "input_tokens" if "input" in self.method else "output_tokens"
        if not window.dataset or name not in window.dataset:
            return False
        pdf = window.dataset[name]
        if self.method.startswith("filter_by_avg"):
            return self.args[0] <= float(np.dot(np.arange(len(pdf)), pdf)) <= self.args[1]
        return max(len(pdf) - 1, 0) <= self.args[0]

    def __repr__(self) -> str:
        return f"{self.method}{self.args}"


class VectorizedFilter:
    """A vectorised predicate: pool -> bool [C, W] (or [C], [W]) mask, as `ClientPool.filter` takes."""

    def __init__(self, predicate: Callable):
        self.predicate = predicate

    def apply(self, pool: ClientPool) -> ClientPool:
        return pool.filter(self.predicate)

    def __call__(self, window: ClientWindow) -> bool:
        raise TypeError("a vectorized filter applies to a whole pool, not to one ClientWindow")
