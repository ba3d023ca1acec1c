"""ServeGen's ``servegen.construct``: `Request` and `generate_workload`.

`generate_workload` runs the vectorised generator (mode ``servegen``, comonotone lengths) and
converts its Arrow table column by column into `Request` objects.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..model.fields import ITEM_FIELDS
from ..model.pool import ClientPool as _ColumnarPool
from ..sample.generate import generate_table
from ._columnar import window_timestamps
from .clientpool import ClientPool, ClientPoolView, as_view
from .workload_types import ClientWindow


@dataclass
class Request:
    """A single request: its id (0.. in time order), arrival time (s from the view start) and data."""
    request_id: int
    timestamp: float
    data: Dict[str, Any]


def generate_workload(pool: Union[ClientPool, ClientPoolView], rate_fn: Dict[int, float], duration: int,
                      seed: Optional[int] = None) -> List[Request]:
    """ServeGen's generate_workload: requests over [0, duration) of the pool (or view).

    `rate_fn` maps each window start of the view (as `get()` lists them) to a target aggregate
    rate (req/s), split among the clients in proportion to their own rates. Arrivals follow
    ServeGen's per-window rule (mode "servegen"), lengths one uniform for all fields
    (comonotone). Requests come sorted by time with ids 0..n-1. seed None draws a fresh seed
    from the OS; the global NumPy state is never used.
    """
    if duration <= 0:
        raise ValueError("Duration must be positive")
    if seed is None:
        seed = secrets.randbits(64)
    p = as_view(pool).span(0, duration).columnar
    window_ts = window_timestamps(p)
    if not window_ts:
        return []
    rate_ts = sorted(ts for ts in rate_fn.keys() if 0 <= ts < duration)
    if window_ts != rate_ts:
        raise ValueError(f"Rate function timestamps don't match pool timestamps. "
                         f"Expected {window_ts}, got {rate_ts}")
    keys = _data_fields(p)
    listed = set(window_ts)
    target = np.array([float(rate_fn[t]) if t in listed else 0.0 for t in p.window_start.tolist()])
    table = generate_table(p, target, p.duration, seed=seed, mode="servegen", correlation="comonotone",
                           include_reason_ratio=True)
    n = table.num_rows
    if n == 0:
        return []
    times = table.column("timestamp").to_pylist()
    columns = [table.column(k).to_pylist() for k in keys]
    return [Request(i, t, dict(zip(keys, row))) for i, t, row in zip(range(n), times, zip(*columns))]


def _data_fields(p: _ColumnarPool) -> List[str]:
    """Keys of Request.data (ServeGen: every dataset field, minus the multimodal counts)."""
    counts = set(ITEM_FIELDS.values())
    keys = [f for f in p.fields if f not in counts]
    need = {"output_tokens", "text_tokens" if p.category == "multimodal" else "input_tokens"}
    need |= {ITEM_FIELDS[f] for f in p.fields if f in ITEM_FIELDS}
    missing = sorted(need - set(p.fields))
    if missing:
        raise ValueError(f"pool {p.model!r} has no {', '.join(missing)} distributions; servegen-fast needs "
                         f"them to generate {p.category} requests (its fields: {list(p.fields)})")
    return keys


__all__ = ["Request", "generate_workload", "ClientPool", "ClientPoolView", "ClientWindow"]
