"""Deduplicated table of discrete distributions (lengths, counts, ratios).

Every client and length window points into one shared table, so a pool of a million
clients costs one int32 per (client, length window, field), not one distribution each.
Each distribution is stored sparsely: its support values in ascending order and the
cumulative probabilities, normalised so the last one is exactly 1.0 (an inverse-CDF lookup
with a uniform in (0, 1] can then never run off the end).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class DistTable:
    values: np.ndarray   # float64[N]: support values, ascending within each distribution
    cdf: np.ndarray      # float64[N]: cumulative probability, last of each == 1.0
    offsets: np.ndarray  # int64[K+1]: distribution k is values[offsets[k]:offsets[k+1]]
    _stats: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Values and probabilities (not cumulative) of distribution k."""
        lo, hi = self.offsets[k], self.offsets[k + 1]
        cdf = self.cdf[lo:hi]
        return self.values[lo:hi], np.diff(cdf, prepend=0.0)

    def stat(self, name: str) -> np.ndarray:
        """Per-distribution statistic: 'avg', 'p05', 'p50', 'p95', 'p99', 'max' (float64[K]).

        Percentiles follow ServeGen's `compute_stats`: the first support value whose
        cumulative probability reaches q.
        """
        if name not in self._stats:
            self._stats[name] = self._compute_stat(name)
        return self._stats[name]

    def _compute_stat(self, name: str) -> np.ndarray:
        k = len(self)
        if k == 0:
            return np.zeros(0)
        if name == "max":
            return self.values[self.offsets[1:] - 1].copy()
        if name == "avg":
            probs = np.diff(self.cdf, prepend=0.0)
            probs[self.offsets[:-1]] = self.cdf[self.offsets[:-1]]
            return np.add.reduceat(self.values * probs, self.offsets[:-1]) if k else np.zeros(0)
        q = {"p05": 0.05, "p50": 0.5, "p95": 0.95, "p99": 0.99}[name]
        # searchsorted per segment, vectorised and exact: each segment's cdf ascends, so the
        # first index reaching q is the segment start plus its count of entries below q.
        # (Shifting segments by their index and searching once loses precision for large
        # tables: a cdf a hair below q then counts as reaching it.)
        below = np.concatenate(([0], np.cumsum(self.cdf < q)))
        idx = self.offsets[:-1] + (below[self.offsets[1:]] - below[self.offsets[:-1]])
        idx = np.minimum(idx, self.offsets[1:] - 1)
        return self.values[idx]

    def guide(self) -> tuple[np.ndarray, np.ndarray]:
        """Index tables for O(1) inverse-CDF lookups (Chen & Asau's guide tables).

        For distribution k with n points, guide[goff[k] + g] (g = 0..n) is the first local
        index whose cdf reaches g / n. Returns (guide int64[N + K], goff int64[K + 1]).
        """
        if "guide" not in self._stats:
            k = len(self)
            lens = np.diff(self.offsets)
            goff = self.offsets + np.arange(k + 1)
            seg = np.repeat(np.arange(k), lens + 1)
            g = np.arange(len(seg)) - goff[seg]
            shifted = self.cdf + 2.0 * np.repeat(np.arange(k), lens)
            idx = np.searchsorted(shifted, g / lens[seg] + 2.0 * seg, side="left") - self.offsets[seg]
            self._stats["guide"] = (np.minimum(idx, lens[seg] - 1).astype(np.int64), goff.astype(np.int64))
        return self._stats["guide"]

    @staticmethod
    def empty() -> "DistTable":
        return DistTable(np.zeros(0), np.zeros(0), np.zeros(1, dtype=np.int64))


class DistTableBuilder:
    """Accumulates distributions, returning a stable id per distinct one."""

    def __init__(self) -> None:
        self._index: dict[bytes, int] = {}
        self._values: list[np.ndarray] = []
        self._cdfs: list[np.ndarray] = []

    def add(self, values: np.ndarray, probs: np.ndarray) -> int:
        """Add a distribution given support values and probabilities (any order, zeros allowed).

        The caller validates; here zero-probability points are dropped, values sorted and the
        probabilities normalised.
        """
        values = np.asarray(values, dtype=np.float64)
        probs = np.asarray(probs, dtype=np.float64)
        keep = probs > 0
        values, probs = values[keep], probs[keep]
        if not np.all(values[1:] > values[:-1]):
            order = np.argsort(values, kind="stable")
            values, probs = values[order], probs[order]
        cdf = np.cumsum(probs)
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        return self.add_normalised(values, cdf)

    def add_normalised(self, values: np.ndarray, cdf: np.ndarray) -> int:
        key = hashlib.blake2b(values.tobytes() + b"|" + cdf.tobytes(), digest_size=16).digest()
        k = self._index.get(key)
        if k is None:
            k = len(self._values)
            self._index[key] = k
            self._values.append(values)
            self._cdfs.append(cdf)
        return k

    def build(self) -> DistTable:
        if not self._values:
            return DistTable.empty()
        lens = np.fromiter((len(v) for v in self._values), dtype=np.int64, count=len(self._values))
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        return DistTable(np.concatenate(self._values), np.concatenate(self._cdfs), offsets)
