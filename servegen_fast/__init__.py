"""servegen-fast: fast, per-client generation of realistic LLM-serving workloads."""
import importlib.util as _ilu
import os as _os
import sys as _sys


def _kernels_from_source_tree() -> None:
    """`kernels/` is installed as servegen_fast.kernels; in an uninstalled source checkout it
    sits beside this package, so map it there (installed and editable layouts find it alone)."""
    name = __name__ + ".kernels"
    if name in _sys.modules or _ilu.find_spec(name) is not None:
        return
    src = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "kernels")
    init = _os.path.join(src, "__init__.py")
    if _os.path.isfile(init):
        spec = _ilu.spec_from_file_location(name, init, submodule_search_locations=[src])
        module = _ilu.module_from_spec(spec)
        _sys.modules[name] = module
        spec.loader.exec_module(module)


_kernels_from_source_tree()

from .model.pool import ClientPool  # noqa: E402
from .io.servegen_format import read_servegen, write_servegen  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["ClientPool", "read_servegen", "write_servegen", "__version__"]
