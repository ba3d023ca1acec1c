"""The bridge between ServeGen's records and the columnar pool.

ServeGen clients (dicts of dense PDF lists) become one columnar `ClientPool`; ServeGen's view
rules (open-ended last window, whole-second spans, which windows `get()` lists, the empty
pairs of `get_cdfs`) are applied to a columnar pool here, so the public classes only record
what the user asked for.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, List, Optional

import numpy as np

from ..model.distributions import DistTableBuilder
from ..model.fields import REASON_RATIO
from ..model.fields import LAW_CODES, LAW_IDLE, NO_DIST
from ..model.pool import ClientPool

DEFAULT_WINDOW = 600     # nominal length of a lone trace window (ServeGen's data grid)


def pdf_array(pdf) -> Optional[np.ndarray]:
    """The PDF as a 1-D float64 array, or None if any entry is not a number."""
    try:  # a list holding anything but numbers becomes a string or object array
        arr = np.asarray(pdf)
    except ValueError:
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        return None
    return arr.astype(np.float64)


def whole_seconds(x, name: str) -> int:
    if not isinstance(x, numbers.Real) or not float(x).is_integer():
        raise ValueError(f"{name} must be a whole number of seconds, got {x!r}")
    return int(x)


def absolute(pool: ClientPool) -> ClientPool:
    """Put window starts on the source timeline (ServeGen's trace timestamps)."""
    if pool.origin == 0:
        return pool
    return pool.replace(window_start=pool.window_start + pool.origin, origin=0)


def span(base: ClientPool, start, end) -> ClientPool:
    """ServeGen's span on the absolute timeline of `base`, with its open-ended last window."""
    start = whole_seconds(start, "start_time")
    if end != float("inf"):
        end = max(whole_seconds(end, "end_time"), start)
    if base.n_windows == 0:
        return base.span(start, start)
    last_start = int(base.window_start[-1])
    if end == float("inf"):
        end = max(base.duration, start)
    elif end > base.duration:
        wlen = base.window_len.copy()
        wlen[-1] = end - last_start
        base = base.replace(window_len=wlen)
    return base.span(start, end)


def present(p: ClientPool) -> np.ndarray:
    """bool [C, W]: the windows ServeGen's get() lists (clients kept by the view x windows kept by filters)."""
    return np.ones(p.rate.shape, dtype=bool) if p.present is None else p.present


def window_timestamps(p: ClientPool) -> List[int]:
    """Timestamps of the windows ServeGen's get() lists for this view."""
    if p.n_clients == 0:
        return []
    return p.window_start[present(p).any(axis=0)].tolist()


def servegen_cdfs(p: ClientPool) -> dict:
    """`p.cdfs()` in ServeGen's layout: timestamps sorted, and an empty (values, probs) pair
    where every weight is zero (the columnar cdfs leave such windows out)."""
    out = p.cdfs()
    if not out:
        return out
    kept = present(p)
    ts = p.window_start.tolist()
    with_cv = (kept & (p.law != LAW_IDLE)).any(axis=0)
    out["cv"] = _fill_sorted(out["cv"], ts, with_cv)
    out["rate"] = dict(sorted(out["rate"].items()))
    for name in p.fields:
        if name not in out:
            continue
        with_dist = (kept & (p.window_dist_id(name) >= 0)).any(axis=0)
        out[name] = {stat: _fill_sorted(d, ts, with_dist) for stat, d in out[name].items()}
    return out


def _fill_sorted(d: dict, ts: list, has: np.ndarray) -> dict:
    """`d` with an empty (values, probs) pair added at every window in `has` it lacks, by time."""
    out = dict(d)
    for w in np.flatnonzero(has).tolist():
        out.setdefault(ts[w], (np.array([]), np.array([])))
    return dict(sorted(out.items()))


def from_clients(category: str, model: str, clients: list) -> ClientPool:
    """Columnar pool of validated ServeGen `Client`s (identical trace timestamps)."""
    ts = list(clients[0].trace.keys())
    if not ts:
        raise ValueError(f"Client {clients[0].client_id} has an empty trace")
    starts = np.array([whole_seconds(t, "trace timestamp") for t in ts], dtype=np.int64)
    steps = np.diff(starts)
    nominal = int(np.median(steps)) if len(steps) else DEFAULT_WINDOW
    wlen = np.append(steps, steps[-1] if len(steps) else nominal).astype(np.int64)
    arrivals = _arrival_columns(clients, ts)
    fields, union, dist_id, dists = _length_columns(clients)
    d_n = dist_id.shape[1]
    length_index = np.clip(np.searchsorted(np.asarray(union, dtype=np.float64), starts, side="right") - 1,
                           0, d_n - 1).astype(np.int32)
    lws = int(np.diff(union).min()) if len(union) > 1 else nominal
    return ClientPool(
        category=category, model=model,
        client_ids=np.array([int(c.client_id) for c in clients], dtype=np.int64),
        window_start=starts, window_len=wlen, window_index=np.arange(len(ts), dtype=np.int64),
        length_index=length_index, **arrivals, fields=fields, dist_id=dist_id, dists=dists,
        window_size=nominal, length_window_size=max(lws, 1), origin=0)


def _arrival_columns(clients: list, ts: list) -> Dict[str, np.ndarray]:
    """rate, cv, law, shape, scale [C, W] from the clients' traces."""
    c_n, w_n = len(clients), len(ts)
    rate, cv, shape, scale = (np.zeros((c_n, w_n)) for _ in range(4))
    law = np.full((c_n, w_n), LAW_IDLE, dtype=np.uint8)
    for c, client in enumerate(clients):
        for w, t in enumerate(ts):
            data = client.trace[t]
            if data is None:
                continue
            name, params = data["pat"]
            try:
                p1, p2 = (float(x) for x in params)
            except (TypeError, ValueError):
                raise ValueError(f"Client {client.client_id}: pattern parameters at {t} must be "
                                 f"(shape, scale), got {params!r}") from None
            r = float(data["rate"])
            if r > 0 and not (p1 > 0 and p2 > 0 and math.isfinite(p1) and math.isfinite(p2)):
                raise ValueError(f"Client {client.client_id}: pattern parameters at {t} must be positive "
                                 f"(shape, scale), got {params!r}")
            rate[c, w], cv[c, w], shape[c, w], scale[c, w] = r, float(data["cv"]), p1, p2
            law[c, w] = LAW_CODES[name]
    return {"rate": rate, "cv": cv, "law": law, "shape": shape, "scale": scale}


def _length_columns(clients: list):
    """(fields, union of dataset timestamps, dist_id [C, D, F], DistTable) from the clients' datasets."""
    fields: List[str] = []
    for client in clients:
        for entry in client.dataset.values():
            for name in entry:
                if name not in fields:
                    fields.append(name)
    union = sorted({t for client in clients for t in client.dataset})
    builder = DistTableBuilder()
    added: Dict[int, int] = {}  # id(pdf list) -> dist id; the clients own the lists meanwhile
    dist_id = np.full((len(clients), max(len(union), 1), len(fields)), NO_DIST, dtype=np.int32)
    for c, client in enumerate(clients):
        own = list(client.dataset.keys())
        if not own:
            continue
        pick = np.clip(np.searchsorted(np.asarray(own, dtype=np.float64), union, side="right") - 1, 0, None)
        for d, k in enumerate(pick.tolist()):  # latest own entry at or before; the first before it
            for name, pdf in client.dataset[own[k]].items():
                key = id(pdf)
                if key not in added:
                    probs = pdf_array(pdf)
                    n = len(probs)
                    if name == REASON_RATIO:  # ServeGen: entry i of n is the ratio i / (n - 1)
                        values = np.arange(n) / (n - 1) if n > 1 else np.zeros(n)
                    else:
                        values = np.arange(n, dtype=np.float64)
                    added[key] = builder.add(values, probs)
                dist_id[c, d, fields.index(name)] = added[key]
    return tuple(fields), union, dist_id, builder.build()
