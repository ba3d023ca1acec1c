"""What a generation job will produce, said before it starts: requests, bytes and time.

Requests: the expected count of the job's rate over its span (servegen mode on a pool: the exact
count, max(ceil(r·L) − 1, 0) per client and window; renewal/poisson: the mean). Bytes and time
use the figures measured in benchmarks/README.md on 2 cores: about 9 bytes a request in zstd
Parquet (language pools; multimodal list columns add more), and 1.5 to 5 M requests/s to Parquet
(fleets at the low end, pools at the high end), so the time is a range, not a promise.
"""
from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass

import numpy as np

from ..model import rates as R
from ..model.population import Population
from .generate import default_mode
from .plan import servegen_counts

BYTES_PER_REQUEST = 9.0             # zstd Parquet, file encoding 2, benchmarks/README.md (7.0 to 9.4 measured)
REQUESTS_PER_SECOND = (1.5e6, 5e6)  # to Parquet on 2 cores, benchmarks/README.md
COMPILE_SECONDS = 20                # the first run's kernel compilation on 2 cores (benchmarks/README.md)
_EXACT_CELLS = 50_000_000           # clients x windows up to which servegen counts are exact


@dataclass(frozen=True)
class Estimate:
    requests: float
    bytes: float
    seconds: tuple[float, float]
    compile_first: bool = False      # the kernels are not in Numba's cache yet

    def describe(self) -> str:
        lo, hi = self.seconds
        took = "under 1 s" if hi < 1 else f"{_time(lo)} to {_time(hi)}"
        text = f"about {_count(self.requests)} requests, {_size(self.bytes)}, {took}"
        if self.compile_first:
            text += f", after compiling the sampling kernels (first run only, about {_time(COMPILE_SECONDS)})"
        return text


def expected_requests(source, start: int, duration: int, rate: R.RateFn, mode: str | None = None) -> float:
    """The expected request count of `rate` over [start, start + duration) of `source`."""
    view = source.span(start, start + duration)
    aggregate = np.asarray(rate.per_window(view), dtype=np.float64)
    length = np.asarray(view.window_len, dtype=np.float64)
    mode = mode or default_mode(source)
    if mode == "servegen" and not isinstance(view, Population) and view.rate.size <= _EXACT_CELLS:
        return float(servegen_counts(R.client_targets(view, aggregate), length[None, :]).sum())
    return float(np.sum(aggregate * length))


def kernels_cached() -> bool:
    """Whether Numba's cache holds the cpu kernels (else the first run compiles them)."""
    from ..kernels import config

    here = os.path.dirname(os.path.abspath(config.__file__))
    pattern = (os.path.join(here, "__pycache__", "cpu._fill_arrivals-*.nbi") if config.CACHE_DIR is None else
               os.path.join(config.CACHE_DIR, "**", "cpu._fill_arrivals-*.nbi"))
    return bool(glob.glob(pattern, recursive=True))


def estimate(source, start: int, duration: int, rate: R.RateFn, mode: str | None = None,
             backend: str = "cpu") -> Estimate:
    n = expected_requests(source, start, duration, rate, mode)
    seconds = (n / REQUESTS_PER_SECOND[1], n / REQUESTS_PER_SECOND[0])
    return Estimate(n, n * BYTES_PER_REQUEST, seconds, compile_first=backend == "cpu" and not kernels_cached())


def free_bytes(path) -> float | None:
    """Free space where `path` will be written (None if unknown)."""
    folder = os.path.abspath(path)
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        return float(shutil.disk_usage(folder).free)
    except OSError:
        return None


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f}"


def _size(b: float) -> str:
    for unit, scale in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if b >= scale:
            return f"{b / scale:,.1f} {unit}"
    return f"{b:,.0f} bytes"


def _time(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:,.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.0f} s" if s >= 1 else "under 1 s"
