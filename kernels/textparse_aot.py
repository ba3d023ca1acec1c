"""The ServeGen text parsers (textparse.py) compiled ahead of time, when the package is built
(setup.py, with numba.pycc), so that the first pool load after install compiles nothing: with
an empty Numba cache it would compile the three parsers, about 2.2 s, 0.8 s of it Numba's first
compile in a process.

The built module, `_textparse_aot` beside this file, carries a key of the sources it was
compiled from; `parsers()` takes it only while the key matches these files (an edit in a
checkout falls back to the JIT functions until the next `pip install`). Where it could not be
built (no C compiler or Python headers) the JIT functions serve, as before. Both are compiled
from the same Python source without fast-math, so their results are identical, bit for bit
(tests/test_textparse.py holds them equal, on ServeGen's own files too).
"""
from __future__ import annotations

import functools
import hashlib
import os

NAME = "_textparse_aot"
_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = ("textparse.py", "config.py", "textparse_aot.py")
_U8 = 'Array(uint8, 1, "C", readonly=True)'  # writable arrays are taken too
SIGNATURES = {
    "parse_trace_csv": "Tuple((float64[:], float64[:], float64[:], int8[:], float64[:], float64[:], int64, int64, "
                       f"int64))({_U8})",
    "parse_dict_literals": f"Tuple((float64[:], float64[:], int64[:], int64, int64, int64))({_U8}, int64)",
    "segment_cdfs": "Tuple((float64[:], float64[:], int64[:], float64[:], int64, int64))(float64[:], float64[:], "
                    "int64[:])",
}


def source_key() -> int:
    """A 56-bit hash of the sources the parsers are compiled from."""
    h = hashlib.sha1()
    for name in _SOURCES:
        with open(os.path.join(_HERE, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return int.from_bytes(h.digest()[:7], "little")


def compiler():
    """A numba.pycc `CC` of the three parsers and of `source_key` (returning this build's key)."""
    from numba.pycc import CC

    from . import textparse

    cc = CC(NAME, source_module=__name__)
    key = source_key()
    cc.export("source_key", "int64()")(lambda: key)
    for name, signature in SIGNATURES.items():
        cc.export(name, signature)(getattr(textparse, name).py_func)
    return cc


@functools.lru_cache(maxsize=None)
def parsers():
    """The module whose `parse_trace_csv`, `parse_dict_literals` and `segment_cdfs` to call: the
    ahead-of-time build where it is present and built from these sources, else textparse."""
    try:
        from . import _textparse_aot as built
    except ImportError:
        built = None
    if built is not None and built.source_key() == source_key():
        return built
    from . import textparse

    return textparse
