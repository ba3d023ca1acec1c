"""ServeGen's ``servegen.clientpool``: `Client`, `ClientPool` and `ClientPoolView`.

A `ClientPool` here wraps a columnar `servegen_fast.model.pool.ClientPool`; spans and filters
are recorded as ServeGen records them and applied to the columnar pool when a result is asked
for, so filters see the windows of the final view, as in ServeGen. `Client` objects and
`ClientWindow`s (with ServeGen's dense PDF lists) are built only when asked for
(`pool.clients`, `view.get()`, a Python filter predicate).
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..io.servegen_format import PDF_ATOL, read_servegen
from ..model.pool import ClientPool as _ColumnarPool
from . import _columnar
from ._dense import Records
from ._filters import BuiltinFilter, VectorizedFilter
from .workload_types import ArrivalPat, Category, ClientWindow


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
                arr = _columnar.pdf_array(pdf)
                if arr is None:
                    raise ValueError(f"PDF values for {name} at {ts} must be numbers")
                if not np.all(arr >= 0):
                    raise ValueError(f"PDF values for {name} at {ts} must be non-negative")
                if not np.isclose(arr.sum(), 1.0, atol=PDF_ATOL):
                    raise ValueError(f"PDF for {name} at {ts} must sum to 1.0")


def _is_nonneg_number(x) -> bool:
    # ServeGen accepts int/float; NumPy scalars are numbers too. NaN and inf are not rates.
    return isinstance(x, numbers.Real) and math.isfinite(x) and x >= 0


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
            self._set_base(_columnar.absolute(read_servegen(path, category=self.category.value)))
        else:
            self._clients = clients
            self.validate()
            self._set_base(_columnar.from_clients(self.category.value, model, list(clients.values())))

    def _set_base(self, base: _ColumnarPool) -> None:
        self._base = base
        self._records = Records(base)

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
        self._set_base(_columnar.absolute(pool))
        return self

    @property
    def columnar(self) -> _ColumnarPool:
        """The columnar pool underneath (times absolute, as ServeGen's trace timestamps)."""
        return self._base

    @property
    def clients(self) -> Mapping:
        """{client_id: Client}. For a loaded pool each Client is built on first access."""
        if self._clients is None:
            self._clients = _LazyClients(self._records, self.model)
        return self._clients

    @clients.setter
    def clients(self, clients: Dict[int, Client]) -> None:
        previous, self._clients = self._clients, clients
        try:
            self.validate()
        except Exception:
            self._clients = previous
            raise
        self._set_base(_columnar.from_clients(self.category.value, self.model, list(clients.values())))

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


class _LazyClients(Mapping):
    """Read-only {client_id: Client} of a loaded pool; each Client is built on first access."""

    def __init__(self, records: Records, model: str):
        self._records, self._model = records, model
        self._ids = [int(c) for c in records.base.client_ids]
        self._row = {cid: r for r, cid in enumerate(self._ids)}
        self._built: Dict[int, Client] = {}

    def __getitem__(self, cid) -> Client:
        row = self._row[cid]
        client = self._built.get(cid)
        if client is None:
            client = self._built[cid] = Client(*self._records.client(row))
        return client

    def __iter__(self):
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"<{len(self)} clients of {self._model!r}, built on access>"


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
        self.filters.append(VectorizedFilter(condition) if vectorized else condition)
        return self

    def filter_by_cv(self, min_cv: float, max_cv: float) -> "ClientPoolView":
        return self.filter(BuiltinFilter("filter_by_cv", min_cv, max_cv))

    def filter_by_avg_input_len(self, min_len: float, max_len: float) -> "ClientPoolView":
        return self.filter(BuiltinFilter("filter_by_avg_input_len", min_len, max_len))

    def filter_by_avg_output_len(self, min_len: float, max_len: float) -> "ClientPoolView":
        return self.filter(BuiltinFilter("filter_by_avg_output_len", min_len, max_len))

    def filter_by_max_input_len(self, max_len: float) -> "ClientPoolView":
        return self.filter(BuiltinFilter("filter_by_max_input_len", max_len))

    def filter_by_max_output_len(self, max_len: float) -> "ClientPoolView":
        return self.filter(BuiltinFilter("filter_by_max_output_len", max_len))

    def get(self) -> List[ClientWindow]:
        """The view's windows, client by client, in time order (idle windows have rate None)."""
        return self._windows(self.columnar)[0]

    def get_cdfs(self) -> Dict[str, Dict[int, Tuple[np.ndarray, np.ndarray]]]:
        """Per-window CDFs across clients of rate, CV and each field's avg/p50/p95/p99 (ServeGen's layout)."""
        return _columnar.servegen_cdfs(self.columnar)

    # ----------------------------------------------------------------- servegen-fast extras
    @property
    def columnar(self) -> _ColumnarPool:
        """This view as a columnar `servegen_fast.ClientPool` (spanned, filtered, re-based to 0)."""
        key = (self.pool._base, self.start_time, self.end_time, tuple(self.filters))
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        p = _columnar.span(self.pool._base, self.start_time, self.end_time)
        for f in self.filters:
            if isinstance(f, (BuiltinFilter, VectorizedFilter)):
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
        # ServeGen's last window is open-ended: unbounded when the view is
        return self.pool._records.windows(p, open_ended=self.end_time == float("inf"))

    def __repr__(self) -> str:
        return (f"ClientPoolView({self.pool.model!r}, start_time={self.start_time}, end_time={self.end_time}, "
                f"{len(self.filters)} filters)")


def as_view(pool) -> ClientPoolView:
    """The whole-pool view of a ClientPool (or a columnar pool); a view as it is."""
    if isinstance(pool, ClientPoolView):
        return pool
    if isinstance(pool, ClientPool):
        return pool._whole()
    if isinstance(pool, _ColumnarPool):
        return ClientPool.from_pool(pool)._whole()
    raise TypeError(f"expected a ClientPool or ClientPoolView, got {type(pool).__name__}")


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


__all__ = ["Client", "ClientPool", "ClientPoolView", "ClientWindow", "Category", "ArrivalPat"]
