"""Pool files (the format is in `pool_codec.py`, re-exported here) and resolution of a pool
argument: "builtin", a pool file, a ServeGen model directory or "<category>/<model>"."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .pool_codec import FORMAT, FORMAT_VERSION, load_pool_file, save_pool  # noqa: F401 (the pool-file API)
from ..model.pool import ClientPool

BUILTIN_NAME = "builtin"


def builtin_pool_path() -> Path:
    return Path(str(resources.files("servegen_fast.data").joinpath("builtin.parquet")))


def open_pool(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> ClientPool:
    """Resolve a pool argument: ``"builtin"``, a pool file, a ServeGen model directory, or
    ``"<category>/<model>"`` under `data_dir` (default: ``$SERVEGEN_DATA_DIR``, then ``./data``)."""
    from .servegen_format import read_servegen

    spec = str(spec)
    if spec == BUILTIN_NAME:
        return load_pool_file(builtin_pool_path())
    p = Path(spec)
    if p.is_file():
        return load_pool_file(p)
    if data_dir is None and p.is_dir():
        return read_servegen(p)
    if data_dir is None and not os.environ.get("SERVEGEN_DATA_DIR") and not Path("data").is_dir():
        raise FileNotFoundError(f"pool {spec!r} is not 'builtin', a pool file or a directory; to name a ServeGen "
                                f"pool like 'language/m-large', give --data-dir or set SERVEGEN_DATA_DIR")
    return read_servegen(data_dir, spec)
