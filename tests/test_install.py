"""The README's two commands in a fresh virtual environment, in the order a newcomer runs them
(issue 19, row 2): install the package and run it, then the editable install for the tests and
run again. The first run compiles the kernels from the installed copy; its Numba cache must not
be left inside site-packages, where it outlives the uninstall and shadows the editable install
(`cannot import name '__version__' from 'servegen_fast' (unknown location)`).

Dependencies come from this interpreter's environment (a .pth file), so nothing is downloaded:
`pip install --no-deps --no-build-isolation`."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, env, cwd, timeout=300):
    p = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


@pytest.mark.slow
def test_install_run_then_editable_install_run(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    sp = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip())
    # this environment's packages (numpy, numba, pyarrow, pip, setuptools) after the venv's own
    (sp / "_outer_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NUMBA_CACHE", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"), PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    pip = [py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    work = tmp_path / "work"
    work.mkdir()
    cli = venv / "bin" / "servegen-fast"

    src = tmp_path / "src"  # pip builds in the source tree (build/): a copy keeps the checkout clean
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".*", "build", "dist", "out", "*.egg-info",
                                                             "__pycache__", "venv", "*.so"))
    _run([*pip, str(src)], env, work)  # the README's first command ...
    assert (sp / "servegen_fast" / "__init__.py").is_file()
    # setup.py compiled the text parsers ahead of time: a first pool load compiles nothing
    assert list((sp / "servegen_fast" / "kernels").glob("_textparse_aot.*")), "no ahead-of-time text parsers"
    used = _run([py, "-c", "from servegen_fast.kernels.textparse_aot import parsers; print(parsers().__name__)"],
                env, work).stdout.strip()
    assert used == "servegen_fast.kernels._textparse_aot"
    _run([cli, "generate", "--pool", "builtin", "--duration", "10m", "--rate", "5", "-o", "t.parquet", "-q"], env, work)
    _run([cli, "info", "t.parquet"], env, work)
    assert not list((sp / "servegen_fast").rglob("*.nb[ic]")), "Numba's cache was written into site-packages"

    _run([*pip, "-e", str(ROOT)], env, work)  # ... then the second one
    leftovers = sorted(str(p.relative_to(sp)) for p in (sp / "servegen_fast").rglob("*")) \
        if (sp / "servegen_fast").exists() else []
    assert leftovers == [], f"the uninstall left files that shadow the editable install: {leftovers[:5]}"
    p = _run([cli, "--version"], env, work)
    assert "servegen-fast" in p.stdout
    _run([cli, "generate", "--pool", "builtin", "--duration", "10m", "--rate", "5", "-o", "t2.parquet", "-q"],
         env, work)
    origin = _run([py, "-c", "import servegen_fast; print(servegen_fast.__file__)"], env, work).stdout.strip()
    assert Path(origin).resolve().parent == (ROOT / "servegen_fast").resolve()  # the checkout, not a leftover
