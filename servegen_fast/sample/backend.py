"""Sampling backends: the contract every kernel module fulfils, and the loader.

A backend is a kernel module (`kernels/reference.py` "numpy", `kernels/cpu.py` "cpu",
`kernels/cuda.py` "cuda") with the functions of `Kernels`. A backend that can queue a whole
chunk (the cuda one keeps arrivals, ordering and the gather on the device) also provides
`submit_ordered`; the others compute a chunk when it is read out, so one chunk is in memory.
"""
from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

import numpy as np

BACKENDS = ("numpy", "cpu", "cuda")


@runtime_checkable
class Kernels(Protocol):
    """The functions of a backend module (signatures as in kernels/reference.py, the spec)."""

    def count_renewal(self, seed, client, window, length, law, k, scale) -> np.ndarray: ...
    def renewal_arrivals(self, seed, client, window, start, length, law, k, scale, room_off): ...
    def fill_arrivals(self, mode, seed, client, window, start, length, law, k, scale, offsets, out_t, room_off=None,
                      first=None) -> None: ...
    def warp_arrivals(self, seed, client, window, start, length, sigma, tau, offsets, out_t) -> None: ...
    def window_order(self, t, unit_offsets, window_first_unit) -> np.ndarray: ...
    def fill_base(self, corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff,
                  out) -> None: ...
    def fill_items(self, seed, client, window, k, counts, dist, item_offsets, field_slot, values, cdf, offsets,
                   guide, goff, out) -> None: ...
    def gather_rows(self, perm, slot_unit, client, t, vals): ...
    def fill_rows(self, corr_mode, rho, seed, offsets, client, window, dist, values, cdf, doff, guide, goff, perm,
                  t): ...  # gather_rows(perm, ..., fill_base(...)): (ts, client ids, values [F, N])
    # sessions (kernels/session_bodies.py)
    def session_roles(self, seed, client, window, k, prof, values, cdf, off, par): ...
    def expand_turns(self, seed, client, window, k, prof, turns, ts, fin, fout, values, cdf, off, par, dist, vals, pv,
                     pc, pdoff, guide, goff, toff): ...
    def fill_block_ids(self, seed, sid, client, pid, ptok, inp, bs, boff) -> np.ndarray: ...


class Backend:
    """A loaded backend: its kernels, and `submit(args)` returning a job whose `result()` is the
    chunk's (timestamps, client ids, base values, perm, unit of each row) in time order."""

    def __init__(self, name: str, kernels: Kernels):
        if not isinstance(kernels, Kernels):
            raise TypeError(f"backend {name!r} does not implement the kernel contract")
        self.name, self.kernels = name, kernels
        self._submit_ordered = getattr(kernels, "submit_ordered", None)  # asynchronous backends only

    def count_renewal(self, *args) -> np.ndarray:
        return self.kernels.count_renewal(*args)

    def renewal_arrivals(self, *args):
        return self.kernels.renewal_arrivals(*args)

    def fill_items(self, *args) -> None:
        self.kernels.fill_items(*args)

    def session_roles(self, *args):
        return self.kernels.session_roles(*args)

    def expand_turns(self, *args):
        return self.kernels.expand_turns(*args)

    def fill_block_ids(self, *args) -> np.ndarray:
        return self.kernels.fill_block_ids(*args)

    def submit(self, args: tuple):
        if self._submit_ordered is not None:
            return self._submit_ordered(*args)
        return _Deferred(self.kernels, args)


class _Deferred:
    """A synchronous backend's chunk, computed when read out (so one chunk is in memory at a time)."""

    def __init__(self, kern, args):
        self._kern, self._args = kern, args

    def result(self):
        return _ordered_rows(self._kern, *self._args)


def _ordered_rows(kern, mode, seed, client, window, start, length, law, k, scale, offsets, first_unit, corr_mode,
                  rho, dist, tables, want_units, mod=None, pre=None):
    """(timestamps, client ids, base values [F, N], perm, unit of each row) of a chunk in time order;
    `pre`: renewal_arrivals' (room_off, first), or None."""
    n = int(offsets[-1])
    out_t = np.empty(n, np.float64)
    if n:
        kern.fill_arrivals(mode, seed, client, window, start, length, law, k, scale, offsets, out_t,
                           *(pre if pre is not None else ()))
        if mod is not None:  # intra-window modulation (kernels/modulation.py): (sigma, tau) per unit
            kern.warp_arrivals(seed, client, window, start, length, mod[0], mod[1], offsets, out_t)
    perm = kern.window_order(out_t, offsets, first_unit) if n else np.zeros(0, np.int64)
    ts, cid, vals = kern.fill_rows(corr_mode, rho, seed, offsets, client, window, dist, *tables, perm, out_t)
    unit = None
    if want_units:
        unit = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))[perm]
    return ts, cid, vals, perm, unit


def load_backend(name: str) -> Backend:
    if name == "numpy":
        from ..kernels import reference as mod
    elif name == "cpu":
        from ..kernels import config, cpu as mod
        config.start_threads()
    elif name == "cuda":
        try:
            from ..kernels import cuda as mod
        except ImportError as e:
            raise RuntimeError(f"backend 'cuda' is not available: {e}") from None
    else:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    return Backend(name, mod)


def preload(name: str) -> threading.Thread | None:
    """Start getting backend `name` ready in a background thread while the caller does other work
    (loads a pool). For "cpu" that is Numba's CPU target: its first set-up imports Numba's NumPy
    support (scipy.linalg with it) and took 0.3 s of every new process, on the path to the first
    cached kernel. Only time moves: the kernels, and what they compute, are the same."""
    if name != "cpu":
        return None
    thread = threading.Thread(target=_prepare_cpu, name="servegen-fast-preload")  # not a daemon: never
    thread.start()                                                               # cut off mid-import at exit
    return thread


def _prepare_cpu() -> None:
    try:
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.registry import cpu_target

        from ..kernels import cpu  # noqa: F401 (its dispatchers)

        with global_compiler_lock:  # the lock a first dispatch takes to do the same
            cpu_target.typing_context.refresh()
            cpu_target.target_context.refresh()
    except Exception:  # noqa: BLE001 - only a head start: the first dispatch does it again, and reports
        pass


def backends_status() -> dict:
    """Each backend's name -> whether it works here (and why not)."""
    import numba

    out = {"numpy": "available (reference)",
           "cpu": f"available (numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads)"}
    try:
        load_backend("cuda")
        out["cuda"] = "available"
    except RuntimeError as e:
        out["cuda"] = f"unavailable: {e}"
    return out
