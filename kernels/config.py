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
import re

import numba

_CPU = dict(cache=True, nogil=True, error_model="numpy")


_HERE = os.path.dirname(os.path.abspath(__file__))


_RELATIVE_IMPORT = re.compile(rb"^[ \t]*from[ \t]+\.(\w*)[ \t]+import[ \t]+\(?([\w ,\t]+)", re.M)


def _local_imports(source: bytes) -> set[str]:
    """Names of the kernel modules a source imports relatively (`from . import x`, `from .x import y`)."""
    out = set()
    for module, names in _RELATIVE_IMPORT.findall(source):
        if module:
            out.add(module.decode())
        else:
            out.update(n.split()[0].decode() for n in names.split(b",") if n.strip())
    return out


def _py_sources(folder: str) -> dict[str, bytes]:
    """The .py files of `folder`, name -> bytes."""
    out = {}
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                out[name] = f.read()
    return out


def _sources_key(folder: str, path: str | None = None) -> str:
    """A hash of the kernel sources the module at `path` is compiled from: its own file, the
    kernel modules it imports (transitively) and this one (the JIT options); every kernel source
    when `path` is None or lies outside `folder`. Numba checks only the file that defines a
    kernel, not the files it inlines (bodies.py, philox.py), so a cache keyed by them can never
    serve machine code compiled from older sources; and a module keeps its cache when an
    unrelated kernel changes (the ServeGen text parsers are not recompiled for a sampler edit)."""
    sources = _py_sources(folder)
    names = set(sources)
    if path is not None and os.path.dirname(os.path.abspath(path)) == folder:
        todo, names = [os.path.basename(path), "config.py"], set()
        while todo:
            name = todo.pop()
            if name in names or name not in sources:
                continue
            names.add(name)
            todo.extend(m + ".py" for m in _local_imports(sources[name]))
    h = hashlib.sha1()
    for name in sorted(names):
        h.update(name.encode() + b"\0" + sources[name])
    return h.hexdigest()[:16]


def _sibling_key(folder: str, key: str) -> str:
    """`key` extended by every .py file in `folder`: a jitted function outside kernels/ (the
    simulator's event loop, simulate/kernel.py) compiles in jitted functions of the modules
    beside it (simulate/passes.py, prefix.py), and numba checks only its own file, so an edit
    to a sibling would otherwise leave the old machine code in the cache."""
    h = hashlib.sha1(key.encode())
    for name, source in sorted(_py_sources(folder).items()):
        h.update(name.encode() + b"\0" + source)
    return h.hexdigest()[:16]


def _cache_root() -> str | None:
    """Where Numba caches the compiled kernels: `.cache/numba` of a checkout, or for a package
    installed into site-packages a per-user folder (~/.cache/servegen-fast/numba), since cache
    files written into the package are not in pip's record: uninstalling leaves them, and the
    folder they keep then shadows a later editable install (`cannot import name '__version__'
    ... (unknown location)`). A NUMBA_CACHE_DIR set by the user is left to numba."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    parts = _HERE.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "servegen-fast", "numba")
    return os.path.join(os.path.dirname(_HERE), ".cache", "numba")


@functools.lru_cache(maxsize=None)
def cache_dir(path: str | None = None) -> str | None:
    """The cache folder of the kernels defined in the file `path`: a folder named by
    `_sources_key` under `_cache_root()`; None (numba's default) when the user set
    NUMBA_CACHE_DIR or the folder is not writable."""
    root = _cache_root()
    if root is None:
        return None
    key = _sources_key(_HERE, path)
    if path is not None and os.path.dirname(os.path.abspath(path)) != _HERE:
        key = _sibling_key(os.path.dirname(os.path.abspath(path)), key)
    folder = os.path.join(root, key)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


CACHE_DIR = cache_dir(os.path.join(_HERE, "cpu.py"))  # the sampling kernels' folder (estimate.py looks there)


def _cached(decorate):
    """`decorate` with numba's cache in the defining file's `cache_dir`: numba fixes a
    function's cache folder when it is decorated, so numba.config.CACHE_DIR is set only
    meanwhile (other users of numba in the process keep their own setting)."""
    def wrap(func):
        folder = cache_dir(os.path.abspath(func.__code__.co_filename))
        if folder is None:
            return decorate(func)
        old = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = folder
        try:
            return decorate(func)
        finally:
            numba.config.CACHE_DIR = old
    return wrap


njit = _cached(numba.njit(**_CPU))                              # serial kernels
njit_parallel = _cached(numba.njit(parallel=True, **_CPU))      # prange kernels
njit_inline = _cached(functools.partial(numba.njit, forceinline=True, **_CPU))  # scalar bodies and samplers


def start_threads() -> None:
    """Start numba's thread pool with OpenMP workers that sleep, not spin, when idle.

    Workers of numba's `omp` layer that finish a parallel loop early spin at its barrier by
    default, burning the core the Parquet writer thread and the serial host stages between
    kernels need (the fleet day: ~20% less CPU, benchmarks/README.md "Fleet pass"). libgomp reads
    OMP_WAIT_POLICY once, when it is loaded, i.e. when numba starts its pool (here, or at the
    first parallel kernel); the variable is set only meanwhile, so other OpenMP users of the
    process and child processes keep their own default. A user's own setting wins; a pool
    already started keeps its policy."""
    if "OMP_WAIT_POLICY" in os.environ:
        numba.get_num_threads()
        return
    os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        numba.get_num_threads()  # launches the pool (numba's public API)
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


# Ordering: a bucket above this many arrivals (clustered times) leaves insertion sort for
# an n log n sort (merge sort on the CPU, heap sort on the GPU).
SMALL_BUCKET = 32
# A window of at least SPLIT_WINDOW arrivals, when a chunk has too few windows for one task
# each, is sorted in parallel: SPLIT_BLOCKS slot blocks scattered into time ranges of about
# SPLIT_RANGE_ROWS arrivals (small enough to sort in cache).
SPLIT_WINDOW = 1 << 16
SPLIT_BLOCKS = 64
SPLIT_RANGE_ROWS = 4096

CUDA_THREADS_PER_BLOCK = int(os.environ.get("SERVEGEN_FAST_CUDA_TPB", "256"))
CUDA_MAX_BLOCKS = int(os.environ.get("SERVEGEN_FAST_CUDA_MAX_BLOCKS", "65535"))
CUDA_SCAN_SEGMENTS = int(os.environ.get("SERVEGEN_FAST_CUDA_SCAN_SEGMENTS", "4096"))  # partials of the prefix scan
