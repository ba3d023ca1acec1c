"""JIT and launch options of every kernel module, in one place.

CPU kernels are compiled with `cache=True` (beside the installed package), `nogil=True` (the
writer thread encodes while a kernel runs) and `error_model="numpy"` (no ZeroDivisionError
checks in the loops). Samplers are inlined at Numba-IR level into their callers, which makes
the Philox chain about 5x faster. CUDA launch sizes come from the environment, so tests can
run tiny blocks under the simulator and exercise block edges.
"""
from __future__ import annotations

import functools
import os

import numba

_CPU = dict(cache=True, nogil=True, error_model="numpy")

njit = numba.njit(**_CPU)                               # serial kernels
njit_parallel = numba.njit(parallel=True, **_CPU)       # prange kernels
njit_inline = functools.partial(numba.njit, inline="always", **_CPU)  # scalar bodies and samplers

# Ordering: a bucket above this many arrivals (clustered times) leaves insertion sort for
# an n log n sort (merge sort on the CPU, heap sort on the GPU).
SMALL_BUCKET = 32

CUDA_THREADS_PER_BLOCK = int(os.environ.get("SERVEGEN_FAST_CUDA_TPB", "256"))
CUDA_MAX_BLOCKS = int(os.environ.get("SERVEGEN_FAST_CUDA_MAX_BLOCKS", "65535"))
CUDA_SCAN_SEGMENTS = int(os.environ.get("SERVEGEN_FAST_CUDA_SCAN_SEGMENTS", "4096"))  # partials of the prefix scan
