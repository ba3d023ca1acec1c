"""ServeGen's public API (same names and signatures) on top of servegen-fast.

A ServeGen script runs after changing its import lines only (see docs/compat.md)::

    from servegen_fast.compat import Category, ClientPool, generate_workload
    from servegen_fast.compat import get_constant_rate_fn, get_scaled_rate_fn, get_bounded_rate_fn

ServeGen's submodules are mirrored as well, so replacing the package name ``servegen`` by
``servegen_fast.compat`` in every import line also works (``servegen_fast.compat.clientpool``,
``.construct``, ``.utils``, ``.workload_types``).

Underneath, a `ClientPool` here wraps a columnar `servegen_fast.model.pool.ClientPool`; spans and
filters are recorded as ServeGen records them and applied to the columnar pool when a result
is asked for, so filters see the windows of the final view, as in ServeGen. Per-client
`Client` objects and per-window `ClientWindow` objects (with ServeGen's dense PDF lists) are
built only when asked for (`pool.clients`, `view.get()`, a Python filter predicate).
`generate_workload` runs the vectorised generator (mode ``servegen``, comonotone lengths) and
converts its Arrow table column by column into `Request` objects.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
import secrets
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .model.distributions import DistTableBuilder
from .sample.generate import generate_table
from .model.pool import LAW_CODES, LAW_IDLE, LAW_NAMES, NO_DIST
from .model.pool import ClientPool as _ColumnarPool
from .io.servegen_format import read_servegen

_COUNT_FIELDS = {"image_tokens": "image_count", "audio_tokens": "audio_count", "video_tokens": "video_count"}
_RATIO_FIELD = "reason_ratio"
_PDF_ATOL = 1e-6          # ServeGen's Client.validate tolerance on a PDF's sum
_DEFAULT_WINDOW = 600     # nominal length of a lone trace window (ServeGen's data grid)


# =========================================================================== workload_types
class Category(Enum):
    LANGUAGE = "language"
    MULTIMODAL = "multimodal"
    REASON = "reason"


class ArrivalPat(Enum):
    GAMMA = "Gamma"
    WEIBULL = "Weibull"


@dataclass
class ClientWindow:
    """One client's data in one (possibly truncated) window of a view; times relative to the view."""
    client_id: int
    timestamp: int
    window_size: int
    rate: Optional[float] = None
    cv: Optional[float] = None
    arrival_pat: Optional[Tuple[str, Tuple[float, ...]]] = None
    dataset: Optional[Dict[str, List[float]]] = None


# =========================================================================== clientpool
@dataclass
class Client:
    """ServeGen's per-client record.

    trace: {timestamp: None (idle) or {"rate", "cv", "pat": (name, (shape, scale))}};
    dataset: {timestamp: {field: dense PDF list}} where entry i is the probability of value i
    (for ``reason_ratio``, of the ratio i / (len - 1)).
    """
    client_id: int
    trace: Dict[int, Optional[Dict]]
    dataset: Dict[int, Dict]

    def validate(self) -> None:
        """Raise ValueError (ServeGen's messages) if the client's data is malformed."""
        keys = list(self.trace.keys())
        if sorted(keys) != keys:
            raise ValueError("Trace timestamps must be in ascending order")
        for ts, data in self.trace.items():
            if data is None:
                continue
            if not isinstance(data, dict):
                raise ValueError(f"Trace data at {ts} must be a dictionary")
            missing = {"rate", "cv", "pat"} - set(data.keys())
            if missing:
                shown = "{" + ", ".join(repr(m) for m in sorted(missing)) + "}"
                raise ValueError(f"Trace data at {ts} missing required fields: {shown}")
            if not _is_nonneg_number(data["rate"]):
                raise ValueError(f"Rate at {ts} must be a non-negative number")
            if not _is_nonneg_number(data["cv"]):
                raise ValueError(f"CV at {ts} must be a non-negative number")
            pat = data["pat"]
            if not isinstance(pat, (tuple, list)) or len(pat) != 2:
                raise ValueError(f"Pattern at {ts} must be a tuple/list of (name, params) {pat}")
            if pat[0] not in [p.value for p in ArrivalPat]:
                raise ValueError(f"Invalid arrival pattern at {ts}: {pat[0]}")
        keys = list(self.dataset.keys())
        if sorted(keys) != keys:
            raise ValueError("Dataset timestamps must be in ascending order")
        for ts, fields in self.dataset.items():
            if not isinstance(fields, dict):
                raise ValueError(f"Dataset at {ts} must be a dictionary")
            for name, pdf in fields.items():
                if not isinstance(pdf, (list, tuple, np.ndarray)):
                    raise ValueError(f"PDF for {name} at {ts} must be a list")
                arr = _pdf_array(pdf)
                if arr is None:
                    raise ValueError(f"PDF values for {name} at {ts} must be numbers")
                if not np.all(arr >= 0):
                    raise ValueError(f"PDF values for {name} at {ts} must be non-negative")
                if not np.isclose(arr.sum(), 1.0, atol=_PDF_ATOL):
                    raise ValueError(f"PDF for {name} at {ts} must sum to 1.0")


def _is_nonneg_number(x) -> bool:
    # ServeGen accepts int/float; NumPy scalars are numbers too. NaN and inf are not rates.
    return isinstance(x, numbers.Real) and math.isfinite(x) and x >= 0


def _pdf_array(pdf) -> Optional[np.ndarray]:
    """The PDF as a 1-D float64 array, or None if any entry is not a number."""
    try:  # a list holding anything but numbers becomes a string or object array
        arr = np.asarray(pdf)
    except ValueError:
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        return None
    return arr.astype(np.float64)


class ClientPool:
    """ServeGen's ClientPool: a category, a model and its clients.

    ``ClientPool(category, model)`` loads ``{base_dir}/{category}/{model}``. With ``base_dir``
    left at ``"data"`` and no ``./data`` directory, ``$SERVEGEN_DATA_DIR`` is used; the
    keyword ``data_dir=`` names the data root explicitly. With ``clients`` given (a dict
    id -> Client) the clients are validated and used instead.
    """

    def __init__(self, category: Category, model: str, clients: Optional[Dict[int, Client]] = None,
                 base_dir: str = "data", *, data_dir: Optional[str] = None):
        self.category = _as_category(category)
        self.model = model
        if clients is None:
            path = _model_dir(self.category, model, base_dir, data_dir)
            self._clients: Optional[Dict[int, Client]] = None
            self._base = _absolute(read_servegen(path, category=self.category.value))
        else:
            self._clients = clients
            self.validate()
            self._base = _columnar_from_clients(self.category, model, list(clients.values()))
        self._dense_cache: Dict[Tuple[int, bool], list] = {}
        self._dataset_cache: Dict[tuple, Optional[dict]] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_clients(cls, category: Category, model: str, clients: List[Client]) -> "ClientPool":
        seen = set()
        for client in clients:
            if client.client_id in seen:
                raise ValueError(f"Duplicate client ID: {client.client_id}")
            seen.add(client.client_id)
        return cls(category, model, clients={c.client_id: c for c in clients})

    @classmethod
    def from_pool(cls, pool: _ColumnarPool) -> "ClientPool":
        """Wrap a columnar `servegen_fast.ClientPool` (e.g. from `open_pool`) in ServeGen's API."""
        if not isinstance(pool, _ColumnarPool):
            raise TypeError(f"expected a servegen_fast ClientPool, got {type(pool).__name__}")
        self = cls.__new__(cls)
        self.category = Category(pool.category)
        self.model = pool.model
        self._clients = None
        self._base = _absolute(pool)
        self._dense_cache = {}
        self._dataset_cache = {}
        return self

    @property
    def columnar(self) -> _ColumnarPool:
        """The columnar pool underneath (times absolute, as ServeGen's trace timestamps)."""
        return self._base

    @property
    def clients(self) -> Mapping:
        """{client_id: Client}. For a loaded pool each Client is built on first access."""
        if self._clients is None:
            self._clients = _LazyClients(self)
        return self._clients

    @clients.setter
    def clients(self, clients: Dict[int, Client]) -> None:
        previous, self._clients = self._clients, clients
        try:
            self.validate()
        except Exception:
            self._clients = previous
            raise
        self._base = _columnar_from_clients(self.category, self.model, list(clients.values()))
        self._dense_cache.clear()
        self._dataset_cache.clear()

    def validate(self) -> None:
        """ServeGen's pool checks: each client valid, identical trace timestamps, dataset
        timestamps among the trace timestamps."""
        clients = self.clients
        if len(clients) == 0:
            raise ValueError("ClientPool has no clients")
        for client in clients.values():
            client.validate()
        first = next(iter(clients.values()))
        expected = set(first.trace.keys())
        for cid, client in clients.items():
            got = set(client.trace.keys())
            if got != expected:
                raise ValueError(f"Client {cid} has different trace timestamps than the first client. "
                                 f"Expected {sorted(expected)}, got {sorted(got)}")
        for cid, client in clients.items():
            extra = set(client.dataset.keys()) - expected
            if extra:
                raise ValueError(f"Client {cid} has dataset timestamps that are not in trace timestamps: "
                                 f"{sorted(extra)}")

    # ----------------------------------------------------------------- ServeGen's view API
    def _whole(self) -> "ClientPoolView":
        return ClientPoolView(self, 0, float("inf"))

    def span(self, start_time: int, end_time: int) -> "ClientPoolView":
        return ClientPoolView(self, start_time, end_time)

    def filter(self, condition: Callable, vectorized: bool = False) -> "ClientPoolView":
        return self._whole().filter(condition, vectorized=vectorized)

    def filter_by_cv(self, min_cv: float, max_cv: float) -> "ClientPoolView":
        return self._whole().filter_by_cv(min_cv, max_cv)

    def filter_by_avg_input_len(self, min_len: float, max_len: float) -> "ClientPoolView":
        return self._whole().filter_by_avg_input_len(min_len, max_len)

    def filter_by_avg_output_len(self, min_len: float, max_len: float) -> "ClientPoolView":
        return self._whole().filter_by_avg_output_len(min_len, max_len)

    def filter_by_max_input_len(self, max_len: float) -> "ClientPoolView":
        return self._whole().filter_by_max_input_len(max_len)

    def filter_by_max_output_len(self, max_len: float) -> "ClientPoolView":
        return self._whole().filter_by_max_output_len(max_len)

    def get(self) -> List[ClientWindow]:
        return self._whole().get()

    def get_cdfs(self) -> Dict[str, Dict[int, Tuple[np.ndarray, np.ndarray]]]:
        return self._whole().get_cdfs()

    def __repr__(self) -> str:
        return (f"ClientPool({self.category}, {self.model!r}, {self._base.n_clients} clients, "
                f"{self._base.n_windows} windows)")

    # ----------------------------------------------------------------- materialisation
    def _dense(self, dist: int, ratio: bool) -> list:
        """ServeGen's dense PDF list of distribution `dist` (cached; zeros share one float)."""
        key = (dist, ratio)
        out = self._dense_cache.get(key)
        if out is None:
            values, probs = self._base.dists.get(dist)
            if ratio:
                n = _ratio_grid(values)
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
            self._dense_cache[key] = out
        return out

    def _dataset(self, ids: np.ndarray, fields: tuple) -> Optional[dict]:
        """{field: dense PDF} for one (client, length window) row of dist ids; None if it has none."""
        key = tuple(ids.tolist())
        if key not in self._dataset_cache:
            ds = {f: self._dense(k, f == _RATIO_FIELD) for f, k in zip(fields, key) if k != NO_DIST}
            self._dataset_cache[key] = ds or None
        return self._dataset_cache[key]

    def _client(self, row: int) -> Client:
        b = self._base
        ts = b.window_start.tolist()
        law = b.law[row]
        rate, cv, p1, p2 = (a[row].tolist() for a in (b.rate, b.cv, b.shape, b.scale))
        trace = {t: None if law[w] == LAW_IDLE else
                 {"rate": rate[w], "cv": cv[w], "pat": (LAW_NAMES[int(law[w])], (p1[w], p2[w]))}
                 for w, t in enumerate(ts)}
        dataset = {}
        first_w = np.flatnonzero(np.diff(b.length_index, prepend=-1) != 0)
        for w in first_w.tolist():
            ds = self._dataset(b.dist_id[row, b.length_index[w]], b.fields)
            if ds is not None:
                dataset[ts[w]] = ds
        return Client(client_id=int(b.client_ids[row]), trace=trace, dataset=dataset)


class _LazyClients(Mapping):
    """Read-only {client_id: Client} of a loaded pool; each Client is built on first access."""

    def __init__(self, owner: ClientPool):
        self._owner = owner
        self._ids = [int(c) for c in owner._base.client_ids]
        self._row = {cid: r for r, cid in enumerate(self._ids)}
        self._built: Dict[int, Client] = {}

    def __getitem__(self, cid) -> Client:
        row = self._row[cid]
        client = self._built.get(cid)
        if client is None:
            client = self._built[cid] = self._owner._client(row)
        return client

    def __iter__(self):
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"<{len(self)} clients of {self._owner.model!r}, built on access>"


class _Filter:
    """A built-in ServeGen filter: callable on one ClientWindow (ServeGen's semantics) and
    applied to the columnar pool in one vectorised step."""

    def __init__(self, method: str, *args):
        self.method, self.args = method, args

    def apply(self, pool: _ColumnarPool) -> _ColumnarPool:
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


class _Vectorized:
    """A vectorised predicate: pool -> bool [C, W] (or [C], [W]) mask, as `ClientPool.filter` takes."""

    def __init__(self, predicate: Callable):
        self.predicate = predicate

    def apply(self, pool: _ColumnarPool) -> _ColumnarPool:
        return pool.filter(self.predicate)

    def __call__(self, window: ClientWindow) -> bool:
        raise TypeError("a vectorized filter applies to a whole pool, not to one ClientWindow")


class ClientPoolView:
    """ServeGen's view of a pool: a time range [start_time, end_time) and a list of filters.

    As in ServeGen, filters mutate the view and return it, `span` returns a new view (times
    relative to this view's start) carrying a copy of the filters, and filters are applied to
    the windows of the final view.
    """

    def __init__(self, pool: ClientPool, start_time: int, end_time: int):
        if isinstance(pool, _ColumnarPool):
            pool = ClientPool.from_pool(pool)
        self.pool = pool
        self.start_time = start_time
        self.end_time = end_time
        self.filters: List[Callable[[ClientWindow], bool]] = []
        self._memo: Optional[tuple] = None

    # ----------------------------------------------------------------- ServeGen's API
    def span(self, start_time: int, end_time: int) -> "ClientPoolView":
        view = ClientPoolView(self.pool, self.start_time + start_time, self.start_time + end_time)
        view.filters = self.filters.copy()
        return view

    def filter(self, condition: Callable, vectorized: bool = False) -> "ClientPoolView":
        """Add a filter: a per-ClientWindow predicate (ServeGen), or with vectorized=True a
        function of the columnar pool returning a bool mask (see `servegen_fast.ClientPool.filter`)."""
        self.filters.append(_Vectorized(condition) if vectorized else condition)
        return self

    def filter_by_cv(self, min_cv: float, max_cv: float) -> "ClientPoolView":
        return self.filter(_Filter("filter_by_cv", min_cv, max_cv))

    def filter_by_avg_input_len(self, min_len: float, max_len: float) -> "ClientPoolView":
        return self.filter(_Filter("filter_by_avg_input_len", min_len, max_len))

    def filter_by_avg_output_len(self, min_len: float, max_len: float) -> "ClientPoolView":
        return self.filter(_Filter("filter_by_avg_output_len", min_len, max_len))

    def filter_by_max_input_len(self, max_len: float) -> "ClientPoolView":
        return self.filter(_Filter("filter_by_max_input_len", max_len))

    def filter_by_max_output_len(self, max_len: float) -> "ClientPoolView":
        return self.filter(_Filter("filter_by_max_output_len", max_len))

    def get(self) -> List[ClientWindow]:
        """The view's windows, client by client, in time order (idle windows have rate None)."""
        return self._windows(self.columnar)[0]

    def get_cdfs(self) -> Dict[str, Dict[int, Tuple[np.ndarray, np.ndarray]]]:
        """Per-window CDFs across clients of rate, CV and each field's avg/p50/p95/p99 (ServeGen's layout)."""
        p = self.columnar
        out = p.cdfs()
        if not out:
            return out
        # ServeGen keeps an empty (values, probs) pair where every weight is zero; the columnar
        # cdfs leave such windows out.
        kept = _present(p)
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

    # ----------------------------------------------------------------- servegen-fast extras
    @property
    def columnar(self) -> _ColumnarPool:
        """This view as a columnar `servegen_fast.ClientPool` (spanned, filtered, re-based to 0)."""
        key = (self.pool._base, self.start_time, self.end_time, tuple(self.filters))
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        p = _span(self.pool._base, self.start_time, self.end_time)
        for f in self.filters:
            if isinstance(f, (_Filter, _Vectorized)):
                p = f.apply(p)
            else:
                p = self._apply_predicate(p, f)
        self._memo = (key, p)
        return p

    def _apply_predicate(self, p: _ColumnarPool, condition: Callable) -> _ColumnarPool:
        windows, rows, cols = self._windows(p)
        keep = np.fromiter((bool(condition(w)) for w in windows), dtype=bool, count=len(windows))
        mask = np.zeros((p.n_clients, p.n_windows), dtype=bool)
        mask[rows, cols] = keep
        return p.filter(lambda _: mask)

    def _windows(self, p: _ColumnarPool):
        """(ClientWindow list, rows, cols) of the present windows of `p`, client-major."""
        rows, cols = np.nonzero(_present(p))
        if len(rows) == 0:
            return [], rows, cols
        idle = (p.law[rows, cols] == LAW_IDLE).tolist()
        cid = p.client_ids[rows].tolist()
        ts = p.window_start[cols].tolist()
        size = p.window_len[cols].tolist()
        if self.end_time == float("inf"):
            # ServeGen's last window is open-ended: unbounded when the view is
            last = p.window_index[cols] == self.pool._base.window_index[-1]
            size = [math.inf if x else s for x, s in zip(last.tolist(), size)]
        rate, cv, p1, p2 = (a[rows, cols].tolist() for a in (p.rate, p.cv, p.shape, p.scale))
        law = p.law[rows, cols].tolist()
        if p.fields:  # one dataset dict per distinct (client, length window) row of dist ids
            uniq, inv = np.unique(p.dist_id[rows, p.length_index[cols]], axis=0, return_inverse=True)
            per_row = [self.pool._dataset(u, p.fields) for u in uniq]
            ds = [per_row[i] for i in inv.ravel().tolist()]
        else:
            ds = [None] * len(rows)
        windows = [ClientWindow(client_id=cid[k], timestamp=ts[k], window_size=size[k],
                                rate=None if idle[k] else rate[k], cv=None if idle[k] else cv[k],
                                arrival_pat=None if idle[k] else (LAW_NAMES[law[k]], (p1[k], p2[k])),
                                dataset=ds[k])
                   for k in range(len(rows))]
        return windows, rows, cols

    def __repr__(self) -> str:
        return (f"ClientPoolView({self.pool.model!r}, start_time={self.start_time}, end_time={self.end_time}, "
                f"{len(self.filters)} filters)")


def _present(p: _ColumnarPool) -> np.ndarray:
    """bool [C, W]: the windows ServeGen's get() lists (clients kept by the view x windows kept by filters)."""
    return np.ones(p.rate.shape, dtype=bool) if p.present is None else p.present


def _fill_sorted(d: dict, ts: list, has: np.ndarray) -> dict:
    """`d` with an empty (values, probs) pair added at every window in `has` it lacks, by time."""
    out = dict(d)
    for w in np.flatnonzero(has).tolist():
        out.setdefault(ts[w], (np.array([]), np.array([])))
    return dict(sorted(out.items()))


def _span(base: _ColumnarPool, start, end) -> _ColumnarPool:
    """ServeGen's span on the absolute timeline of `base`, with its open-ended last window."""
    start = _whole_seconds(start, "start_time")
    if end != float("inf"):
        end = max(_whole_seconds(end, "end_time"), start)
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


def _whole_seconds(x, name: str) -> int:
    if not isinstance(x, numbers.Real) or not float(x).is_integer():
        raise ValueError(f"{name} must be a whole number of seconds, got {x!r}")
    return int(x)


def _as_category(category) -> Category:
    if isinstance(category, Category):
        return category
    try:
        return Category(category)
    except ValueError:
        raise ValueError(f"category must be a Category or one of {[c.value for c in Category]}, "
                         f"got {category!r}") from None


def _model_dir(category: Category, model: str, base_dir, data_dir) -> str:
    if data_dir is not None:
        base = os.fspath(data_dir)
    elif os.fspath(base_dir) != "data" or os.path.isdir("data"):
        base = os.fspath(base_dir)
    else:
        base = os.environ.get("SERVEGEN_DATA_DIR") or "data"
    path = os.path.join(base, category.value, model)
    if not os.path.exists(path):
        raise ValueError(f"Data directory not found: {path}")
    return path


def _absolute(pool: _ColumnarPool) -> _ColumnarPool:
    """Put window starts on the source timeline (ServeGen's trace timestamps)."""
    if pool.origin == 0:
        return pool
    return pool.replace(window_start=pool.window_start + pool.origin, origin=0)


def _ratio_grid(values: np.ndarray) -> int:
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


def _columnar_from_clients(category: Category, model: str, clients: List[Client]) -> _ColumnarPool:
    """Columnar pool of validated ServeGen clients (identical trace timestamps)."""
    ts = list(clients[0].trace.keys())
    if not ts:
        raise ValueError(f"Client {clients[0].client_id} has an empty trace")
    starts = np.array([_whole_seconds(t, "trace timestamp") for t in ts], dtype=np.int64)
    steps = np.diff(starts)
    nominal = int(np.median(steps)) if len(steps) else _DEFAULT_WINDOW
    wlen = np.append(steps, steps[-1] if len(steps) else nominal).astype(np.int64)
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

    fields: List[str] = []
    for client in clients:
        for entry in client.dataset.values():
            for name in entry:
                if name not in fields:
                    fields.append(name)
    union = sorted({t for client in clients for t in client.dataset})
    d_n = max(len(union), 1)
    length_index = np.clip(np.searchsorted(np.asarray(union, dtype=np.float64), starts, side="right") - 1,
                           0, d_n - 1).astype(np.int32)
    builder = DistTableBuilder()
    added: Dict[int, int] = {}  # id(pdf list) -> dist id; the clients own the lists meanwhile
    dist_id = np.full((c_n, d_n, len(fields)), NO_DIST, dtype=np.int32)
    for c, client in enumerate(clients):
        own = list(client.dataset.keys())
        if not own:
            continue
        pick = np.clip(np.searchsorted(np.asarray(own, dtype=np.float64), union, side="right") - 1, 0, None)
        for d, k in enumerate(pick.tolist()):  # latest own entry at or before; the first before it
            for name, pdf in client.dataset[own[k]].items():
                key = id(pdf)
                if key not in added:
                    probs = _pdf_array(pdf)
                    n = len(probs)
                    if name == _RATIO_FIELD:
                        values = np.arange(n) / (n - 1) if n > 1 else np.zeros(n)
                    else:
                        values = np.arange(n, dtype=np.float64)
                    added[key] = builder.add(values, probs)
                dist_id[c, d, fields.index(name)] = added[key]
    lws = int(np.diff(union).min()) if len(union) > 1 else nominal
    return _ColumnarPool(
        category=category.value, model=model,
        client_ids=np.array([int(c.client_id) for c in clients], dtype=np.int64),
        window_start=starts, window_len=wlen, window_index=np.arange(w_n, dtype=np.int64),
        length_index=length_index, rate=rate, cv=cv, law=law, shape=shape, scale=scale,
        fields=tuple(fields), dist_id=dist_id, dists=builder.build(), window_size=nominal,
        length_window_size=max(lws, 1), origin=0)


# =========================================================================== construct
@dataclass
class Request:
    """A single request: its id (0.. in time order), arrival time (s from the view start) and data."""
    request_id: int
    timestamp: float
    data: Dict[str, Any]


def _as_view(pool) -> ClientPoolView:
    if isinstance(pool, ClientPoolView):
        return pool
    if isinstance(pool, ClientPool):
        return pool._whole()
    if isinstance(pool, _ColumnarPool):
        return ClientPool.from_pool(pool)._whole()
    raise TypeError(f"expected a ClientPool or ClientPoolView, got {type(pool).__name__}")


def _window_timestamps(p: _ColumnarPool) -> List[int]:
    """Timestamps of the windows ServeGen's get() lists for this view."""
    if p.n_clients == 0:
        return []
    return p.window_start[_present(p).any(axis=0)].tolist()


def _data_fields(p: _ColumnarPool) -> List[str]:
    """Keys of Request.data (ServeGen: every dataset field, minus the multimodal counts)."""
    counts = set(_COUNT_FIELDS.values())
    keys = [f for f in p.fields if f not in counts]
    need = {"output_tokens", "text_tokens" if p.category == "multimodal" else "input_tokens"}
    need |= {_COUNT_FIELDS[f] for f in p.fields if f in _COUNT_FIELDS}
    missing = sorted(need - set(p.fields))
    if missing:
        raise ValueError(f"pool {p.model!r} has no {', '.join(missing)} distributions; servegen-fast needs "
                         f"them to generate {p.category} requests (its fields: {list(p.fields)})")
    return keys


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
    p = _as_view(pool).span(0, duration).columnar
    window_ts = _window_timestamps(p)
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


# =========================================================================== utils
def _aggregate_by_timestamp(pool) -> Tuple[List[int], np.ndarray]:
    p = _as_view(pool).columnar
    ts = _window_timestamps(p)
    if not ts:
        return [], np.zeros(0)
    cols = _present(p).any(axis=0)
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


# =========================================================================== ServeGen's module names
def _submodule(name: str, names: List[str]) -> types.ModuleType:
    mod = types.ModuleType(f"{__name__}.{name}", f"servegen.{name} names, from {__name__}.")
    for n in names:
        setattr(mod, n, globals()[n])
    mod.__all__ = list(names)
    sys.modules[mod.__name__] = mod
    return mod


workload_types = _submodule("workload_types", ["Category", "ArrivalPat", "ClientWindow"])
clientpool = _submodule("clientpool", ["Client", "ClientPool", "ClientPoolView", "ClientWindow", "Category",
                                       "ArrivalPat"])
construct = _submodule("construct", ["Request", "generate_workload", "ClientPool", "ClientPoolView",
                                     "ClientWindow"])
utils = _submodule("utils", ["get_constant_rate_fn", "get_scaled_rate_fn", "get_bounded_rate_fn",
                             "sample_from_cdf", "save_requests_to_csv", "ClientPool", "ClientPoolView",
                             "ClientWindow"])

__all__ = ["Category", "ArrivalPat", "ClientWindow", "Client", "ClientPool", "ClientPoolView", "Request",
           "generate_workload", "get_constant_rate_fn", "get_scaled_rate_fn", "get_bounded_rate_fn",
           "sample_from_cdf", "save_requests_to_csv"]
