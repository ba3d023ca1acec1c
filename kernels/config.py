"""JIT and launch options of every kernel module, in one place.

CPU kernels are compiled with `cache=True` (see `CACHE_DIR` for where), `nogil=True` (the
writer thread encodes while a kernel runs) and `error_model="numpy"` (no ZeroDivisionError
checks in the loops). Samplers and scalar bodies are compiled once each and marked for LLVM to
inline into their callers (`forceinline`): the loops run as fast as with Numba-IR inlining
(`inline="always"`), which re-typed every body inside every caller and made the first compile
4x longer (fill_arrivals 68 s against 8 s; benchmarks/README.md). CUDA launch sizes come from the environment, so tests can
run tiny blocks under the simulator and exercise block edges.
"""
from __future__ import annotations

import functools
import hashlib
import os

import numba

_CPU = dict(cache=True, nogil=True, error_model="numpy")


def _sources_key(folder: str) -> str:
    """A hash of every kernel source: numba checks only the stamp of the file that defines a
    kernel, not of the files it inlines (bodies.py, philox.py), so a cache keyed by all of them
    can never serve machine code compiled from older sources."""
    h = hashlib.sha1()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def _cache_dir() -> str | None:
    """Where Numba caches the compiled kernels: a folder named by `_sources_key`, under
    `.cache/numba` of a checkout, or for a package installed into site-packages under a per-user
    folder (~/.cache/servegen-fast/numba), since cache files written into the package are not in
    pip's record: uninstalling leaves them, and the folder they keep then shadows a later
    editable install (`cannot import name '__version__' ... (unknown location)`). A
    NUMBA_CACHE_DIR set by the user is left to numba; an unwritable folder falls back to numba's
    default."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    folder = os.path.dirname(os.path.abspath(__file__))
    parts = folder.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "servegen-fast", "numba")
    else:
        root = os.path.join(os.path.dirname(folder), ".cache", "numba")
    path = os.path.join(root, _sources_key(folder))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


CACHE_DIR = _cache_dir()


def _cached(decorate):
    """`decorate` with numba's cache in CACHE_DIR: numba fixes a function's cache folder when it
    is decorated, so numba.config.CACHE_DIR is set only meanwhile (other users of numba in the
    process keep their own setting)."""
    if CACHE_DIR is None:
        return decorate

    def wrap(func):
        old = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = CACHE_DIR
        try:
            return decorate(func)
        finally:
            numba.config.CACHE_DIR = old
    return wrap


njit = _cached(numba.njit(**_CPU))                              # serial kernels
njit_parallel = _cached(numba.njit(parallel=True, **_CPU))      # prange kernels
njit_inline = _cached(functools.partial(numba.njit, forceinline=True, **_CPU))  # scalar bodies and samplers

# Ordering: a bucket above this many arrivals (clustered times) leaves insertion sort for
# an n log n sort (merge sort on the CPU, heap sort on the GPU).
SMALL_BUCKET = 32

CUDA_THREADS_PER_BLOCK = int(os.environ.get("SERVEGEN_FAST_CUDA_TPB", "256"))
CUDA_MAX_BLOCKS = int(os.environ.get("SERVEGEN_FAST_CUDA_MAX_BLOCKS", "65535"))
CUDA_SCAN_SEGMENTS = int(os.environ.get("SERVEGEN_FAST_CUDA_SCAN_SEGMENTS", "4096"))  # partials of the prefix scan
