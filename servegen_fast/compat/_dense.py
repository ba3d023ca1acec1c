"""ServeGen's per-client and per-window records, built from a columnar pool on request.

ServeGen keeps a dense PDF list per (client, length window, field); here a distribution is
turned into its dense list once, cached by distribution id, and shared by every record that
uses it, so `pool.clients[...]` and `view.get()` cost one list per distinct distribution.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..model.fields import REASON_RATIO
from ..model.fields import LAW_IDLE, LAW_NAMES, NO_DIST
from ..model.pool import ClientPool
from ._columnar import present
from .workload_types import ClientWindow


class Records:
    """Builds ServeGen's records (client traces and datasets, ClientWindows) of one columnar
    pool `base` and of the views cut from it (which share its distribution table)."""

    def __init__(self, base: ClientPool):
        self.base = base
        self._dense: Dict[Tuple[int, bool], list] = {}
        self._datasets: Dict[tuple, Optional[dict]] = {}

    def dense(self, dist: int, ratio: bool) -> list:
        """ServeGen's dense PDF list of distribution `dist` (cached; zeros share one float)."""
        key = (dist, ratio)
        out = self._dense.get(key)
        if out is None:
            values, probs = self.base.dists.get(dist)
            if ratio:
                n = ratio_grid(values)
                idx = np.rint(values * n).astype(np.int64)
                size = n + 1
            else:
                idx = np.rint(values).astype(np.int64)
                size = int(idx[-1]) + 1 if len(idx) else 0
            if len(idx) and idx.min() < 0:
                raise ValueError(f"distribution {dist} has negative values; it has no dense PDF list")
            out = [0.0] * size
            for i, p in zip(idx.tolist(), probs.tolist()):
                out[i] += p
            self._dense[key] = out
        return out

    def dataset(self, ids: np.ndarray, fields: tuple) -> Optional[dict]:
        """{field: dense PDF} for one (client, length window) row of dist ids; None if it has none."""
        key = tuple(ids.tolist())
        if key not in self._datasets:
            ds = {f: self.dense(k, f == REASON_RATIO) for f, k in zip(fields, key) if k != NO_DIST}
            self._datasets[key] = ds or None
        return self._datasets[key]

    def client(self, row: int) -> Tuple[int, dict, dict]:
        """(client_id, trace, dataset) of row `row` of the base pool, as ServeGen's Client holds them."""
        b = self.base
        ts = b.window_start.tolist()
        law = b.law[row]
        rate, cv, p1, p2 = (a[row].tolist() for a in (b.rate, b.cv, b.shape, b.scale))
        trace = {t: None if law[w] == LAW_IDLE else
                 {"rate": rate[w], "cv": cv[w], "pat": (LAW_NAMES[int(law[w])], (p1[w], p2[w]))}
                 for w, t in enumerate(ts)}
        dataset = {}
        first_w = np.flatnonzero(np.diff(b.length_index, prepend=-1) != 0)
        for w in first_w.tolist():
            ds = self.dataset(b.dist_id[row, b.length_index[w]], b.fields)
            if ds is not None:
                dataset[ts[w]] = ds
        return int(b.client_ids[row]), trace, dataset

    def windows(self, p: ClientPool, open_ended: bool):
        """(ClientWindow list, rows, cols) of the present windows of view `p`, client-major.

        open_ended: the view runs to the pool's end, whose last window ServeGen leaves unbounded.
        """
        rows, cols = np.nonzero(present(p))
        if len(rows) == 0:
            return [], rows, cols
        idle = (p.law[rows, cols] == LAW_IDLE).tolist()
        cid = p.client_ids[rows].tolist()
        ts = p.window_start[cols].tolist()
        size = p.window_len[cols].tolist()
        if open_ended:
            last = p.window_index[cols] == self.base.window_index[-1]
            size = [math.inf if x else s for x, s in zip(last.tolist(), size)]
        rate, cv, p1, p2 = (a[rows, cols].tolist() for a in (p.rate, p.cv, p.shape, p.scale))
        law = p.law[rows, cols].tolist()
        if p.fields:  # one dataset dict per distinct (client, length window) row of dist ids
            uniq, inv = np.unique(p.dist_id[rows, p.length_index[cols]], axis=0, return_inverse=True)
            per_row = [self.dataset(u, p.fields) for u in uniq]
            ds = [per_row[i] for i in inv.ravel().tolist()]
        else:
            ds = [None] * len(rows)
        windows: List[ClientWindow] = [
            ClientWindow(client_id=cid[k], timestamp=ts[k], window_size=size[k],
                         rate=None if idle[k] else rate[k], cv=None if idle[k] else cv[k],
                         arrival_pat=None if idle[k] else (LAW_NAMES[law[k]], (p1[k], p2[k])),
                         dataset=ds[k])
            for k in range(len(rows))]
        return windows, rows, cols


def ratio_grid(values: np.ndarray) -> int:
    """N such that every value is (within 1e-9) a multiple of 1/N, so value i/N sits at index i."""
    pos = values[values > 0]
    if len(pos) == 0:
        return 1
    steps = np.diff(np.concatenate(([0.0], np.sort(pos))))
    step = steps[steps > 1e-12].min()
    for k in range(1, 1001):
        n = int(round(k / step))
        if n >= 1 and np.all(np.abs(values * n - np.rint(values * n)) < 1e-9 * max(n, 1)):
            return n
    return 1000  # no exact grid: nearest of 1001 evenly spaced ratios
