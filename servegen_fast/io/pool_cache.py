"""Parsed ServeGen model directories kept as pool files, so that a later load in a new process
reads one Parquet file (about 0.2 s for m-large) instead of parsing 147 dataset files and
paying Numba's first dispatch of the text parsers (1.5-2 s).

An entry is keyed by the model directory's absolute path, its category, the name, size and
mtime of every file in it, and the sources of the code that parses it (this module's siblings
`servegen_format.py` and `pool_codec.py`, `kernels/textparse.py`, `model/distributions.py`,
`model/pool.py`): editing a data file or the parser makes a new key, never a stale pool. Where:
``$SERVEGEN_FAST_POOL_CACHE`` (a folder, or ``off``), else ``pools/`` beside the kernels' Numba
cache (``.cache/`` of a checkout, ``~/.cache/servegen-fast/`` for an installed package).
Entries are written under a temporary name and renamed; a cache that cannot be written or read
is skipped without a word: it only ever saves time.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_PARSER_SOURCES = ("io/servegen_format.py", "io/pool_codec.py", "model/distributions.py", "model/pool.py")
_PACKAGE = Path(__file__).resolve().parent.parent


def cache_folder() -> Path | None:
    """The folder of the cached pools, or None when caching is off or has no home."""
    env = os.environ.get("SERVEGEN_FAST_POOL_CACHE")
    if env:
        return None if env.lower() in ("0", "off", "no", "false") else Path(env)
    from ..kernels import config

    root = config._cache_root()
    if root is None:  # NUMBA_CACHE_DIR set by the user: keep pools in the per-user folder
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "servegen-fast" / "pools"
    return Path(root).parent / "pools"


def entry_key(model_dir: Path, category: str) -> str:
    """A hash of what a parse of `model_dir` depends on (module docstring)."""
    from ..kernels import textparse

    h = hashlib.sha1(f"{model_dir.resolve()}\0{category}\0".encode())
    for name in sorted(os.listdir(model_dir)):
        st = os.stat(model_dir / name)
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for src in [_PACKAGE / s for s in _PARSER_SOURCES] + [Path(textparse.__file__)]:
        h.update(src.read_bytes())
    return h.hexdigest()[:20]


def load(model_dir: Path, category: str):
    """The cached pool of `model_dir`, or None (no entry, caching off, or an unreadable entry)."""
    from .pool_codec import load_pool_file

    folder = cache_folder()
    if folder is None:
        return None
    try:
        path = folder / f"{entry_key(model_dir, category)}.parquet"
        return load_pool_file(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def store(model_dir: Path, category: str, pool) -> None:
    """Keep `pool`, parsed from `model_dir`, for later loads (silently skipped where it cannot)."""
    from .pool_codec import save_pool

    folder = cache_folder()
    if folder is None:
        return
    try:
        # LZ4 without dictionaries: for m-large written in 0.09 s instead of 0.48 s (zstd with
        # dictionaries, the pool-file default) and read in 0.06 s instead of 0.09 s, 36 MiB not 39
        save_pool(pool, folder / f"{entry_key(model_dir, category)}.parquet", compression="lz4", use_dictionary=False)
    except (OSError, ValueError):
        pass
