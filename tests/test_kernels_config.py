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


def test_a_kernel_outside_kernels_keys_on_its_sibling_modules(tmp_path):
    """simulate/kernel.py's event loop compiles in simulate/passes.py: editing passes.py must
    change the cache folder, or the old machine code would be served."""
    (tmp_path / "kernel.py").write_text("x = 1\n")
    (tmp_path / "passes.py").write_text("y = 1\n")
    (tmp_path / "notes.txt").write_text("not a source\n")
    before = config._sibling_key(str(tmp_path), "k")
    (tmp_path / "notes.txt").write_text("edited\n")
    assert config._sibling_key(str(tmp_path), "k") == before
    (tmp_path / "passes.py").write_text("y = 2\n")
    assert config._sibling_key(str(tmp_path), "k") != before
    assert config._sibling_key(str(tmp_path), "other") != config._sibling_key(str(tmp_path), "k")


def test_start_threads_sets_the_wait_policy_only_while_the_pool_starts():
    """OMP_WAIT_POLICY=passive is set only while numba's pool starts (child processes and other
    OpenMP users keep their default); a user's own setting is left as it is."""
    import os
    import subprocess
    import sys
    code = ("import os; from servegen_fast.kernels import config; config.start_threads(); "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="active"), capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "active"
