"""kernels/config.py: the Numba cache folder of each kernel module is keyed by the sources it is
compiled from (its own file, the kernel modules it imports, config.py), so an edit recompiles
exactly the modules that depend on it."""
from __future__ import annotations

import shutil

from servegen_fast.kernels import config


def test_local_imports_reads_every_relative_form():
    src = (b"from . import config\nfrom . import philox as px, codes\nfrom .bodies import make_bodies\n"
           b"    from .rows import (merge,\n  scatter)\nfrom ..model import pool\nimport numpy as np\n")
    assert config._local_imports(src) == {"config", "philox", "codes", "bodies", "rows"}


def _keys(folder):
    return {m: config._sources_key(str(folder), str(folder / m)) for m in ("cpu.py", "textparse.py", "philox.py")}


def test_key_follows_the_imported_sources_only(tmp_path):
    folder = tmp_path / "kernels"
    shutil.copytree(config._HERE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    before, whole = _keys(folder), config._sources_key(str(folder))
    with open(folder / "bodies.py", "a") as f:  # cpu.py inlines bodies.py; the text parsers do not
        f.write("\n# edited\n")
    after = _keys(folder)
    assert after["cpu.py"] != before["cpu.py"]
    assert after["textparse.py"] == before["textparse.py"] and after["philox.py"] == before["philox.py"]
    assert config._sources_key(str(folder)) != whole  # modules outside kernels/ take every source
    with open(folder / "config.py", "a") as f:  # the JIT options key every module
        f.write("\n# edited\n")
    assert all(_keys(folder)[m] != after[m] for m in after)


def test_cache_folder_is_per_module():
    assert config.CACHE_DIR == config.cache_dir(f"{config._HERE}/cpu.py")
    if config.CACHE_DIR is not None:
        assert config.cache_dir(f"{config._HERE}/textparse.py") != config.CACHE_DIR
