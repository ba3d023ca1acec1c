"""ServeGen's public API (same names and signatures) on top of servegen-fast.

A ServeGen script runs after changing its import lines only (see docs/compat.md)::

    from servegen_fast.compat import Category, ClientPool, generate_workload
    from servegen_fast.compat import get_constant_rate_fn, get_scaled_rate_fn, get_bounded_rate_fn

ServeGen's modules exist here under the same names, so replacing the package name
``servegen`` by ``servegen_fast.compat`` in every import line also works:
``workload_types`` (Category, ArrivalPat, ClientWindow), ``clientpool`` (Client, ClientPool,
ClientPoolView), ``construct`` (Request, generate_workload) and ``utils`` (the rate functions,
sample_from_cdf, save_requests_to_csv). The private modules hold the columnar bridge
(``_columnar``), the records built on request (``_dense``) and the view filters (``_filters``).
"""
from .clientpool import Client, ClientPool, ClientPoolView
from .construct import Request, generate_workload
from .utils import (get_bounded_rate_fn, get_constant_rate_fn, get_scaled_rate_fn, sample_from_cdf,
                    save_requests_to_csv)
from .workload_types import ArrivalPat, Category, ClientWindow

__all__ = ["Category", "ArrivalPat", "ClientWindow", "Client", "ClientPool", "ClientPoolView", "Request",
           "generate_workload", "get_constant_rate_fn", "get_scaled_rate_fn", "get_bounded_rate_fn",
           "sample_from_cdf", "save_requests_to_csv"]
