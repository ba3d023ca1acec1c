"""Shared fixtures: the real reference data (docs/data.md), found or unpacked once per session.

SERVEGEN_FAST_REFERENCE names the folder with the reference files (`servegen-data.tar.gz`,
`azure-llm-2023-conv.csv`, `mooncake-conversation.jsonl`); default `../shared/data` beside the
clone, where CI puts them. SERVEGEN_FAST_DATA is where ServeGen's data is (or will be) unpacked
as `servegen/` (default `.cache/`). Tests that need data skip, with the reason, when it is absent;
with SERVEGEN_FAST_REQUIRE_DATA set (CI) they fail instead.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SERVEGEN_FAST_REFERENCE") or ROOT.parent / "shared" / "data")
# Parsed ServeGen pools are cached (io/pool_cache.py) for this test session only: subprocesses
# inherit the folder, and temporary model directories leave nothing in the user's cache.
if not os.environ.get("SERVEGEN_FAST_POOL_CACHE"):
    os.environ["SERVEGEN_FAST_POOL_CACHE"] = tempfile.mkdtemp(prefix="servegen-fast-pools-")
    atexit.register(shutil.rmtree, os.environ["SERVEGEN_FAST_POOL_CACHE"], True)

POOLS = ("language/m-large", "language/m-mid", "language/m-small", "multimodal/mm-image", "reason/deepseek-r1")


def _servegen_root() -> Path | None:
    cache = Path(os.environ.get("SERVEGEN_FAST_DATA") or ROOT / ".cache")
    root = cache / "servegen"
    if (root / "language").is_dir():
        return root
    tarball = SHARED_DATA / "servegen-data.tar.gz"
    if not tarball.is_file():
        return None
    cache.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tf:
        tf.extractall(cache, filter="data")
    return root if (root / "language").is_dir() else None


@pytest.fixture(scope="session")
def servegen_root() -> Path:
    root = _servegen_root()
    if root is None and os.environ.get("SERVEGEN_FAST_REQUIRE_DATA"):
        pytest.fail("SERVEGEN_FAST_REQUIRE_DATA is set but the ServeGen data was not found")
    if root is None:
        pytest.skip(f"ServeGen data not found: unpack it into $SERVEGEN_FAST_DATA/servegen or put servegen-data.tar.gz in "
                    f"{SHARED_DATA} (see docs/data.md)")
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir() and os.environ.get("SERVEGEN_FAST_REQUIRE_DATA"):
        pytest.fail(f"SERVEGEN_FAST_REQUIRE_DATA is set but {SHARED_DATA} was not found")
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} not found: set SERVEGEN_FAST_REFERENCE (see docs/data.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_pool(servegen_root):
    """Getter for a real ServeGen pool ("language/m-large", ...), loaded once per session.

    The arrays are made read-only, so a test that would change a shared pool fails instead.
    The reader's warning about clients without dataset files is expected here; its text and
    count are asserted in test_servegen_format.py.
    """
    import warnings

    import numpy as np

    from servegen_fast import read_servegen

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*clients have no dataset file", category=UserWarning)
                pool = read_servegen(servegen_root, name)
            for arr in [*vars(pool).values(), *vars(pool.dists).values()]:
                if isinstance(arr, np.ndarray):
                    arr.flags.writeable = False
            cache[name] = pool
        return cache[name]
    return get
