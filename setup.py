"""Builds the package as pyproject.toml says, plus one optional extension: the ServeGen text
parsers compiled ahead of time (kernels/textparse_aot.py), so that a first pool load after
install compiles nothing. Where it cannot be built (no C compiler or Python headers, numba
without pycc) a warning is printed and the parsers compile on first use instead."""
import importlib
import importlib.util
import os
import sys
import types
import warnings

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def text_parsers():
    """[the extension], or [] where it cannot be set up. kernels/ is imported as the installed
    package's servegen_fast.kernels (under an empty parent: the rest of the package needs pyarrow,
    which the build does not have); NUMBA_CACHE_DIR keeps kernels/config.py from making its cache
    folder in the source tree."""
    try:
        os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, "build", "numba-cache"))
        if "servegen_fast" not in sys.modules:
            parent = types.ModuleType("servegen_fast")
            parent.__path__ = []
            sys.modules["servegen_fast"] = parent
        kernels = os.path.join(ROOT, "kernels")
        spec = importlib.util.spec_from_file_location("servegen_fast.kernels", os.path.join(kernels, "__init__.py"),
                                                      submodule_search_locations=[kernels])
        package = importlib.util.module_from_spec(spec)
        sys.modules["servegen_fast.kernels"] = package
        spec.loader.exec_module(package)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba.pycc's pending deprecation
            aot = importlib.import_module("servegen_fast.kernels.textparse_aot")
            ext = aot.compiler().distutils_extension()
        # numba's C sources are absolute paths, which setuptools refuses in a wheel build
        ext.sources = [os.path.relpath(p, ROOT) for p in ext.sources]
        ext.depends = [os.path.relpath(p, ROOT) for p in ext.depends]
        return [ext]
    except Exception as e:  # noqa: BLE001 - any failure leaves the JIT parsers, never a failed install
        print(f"warning: the text parsers are not compiled ahead of time ({type(e).__name__}: {e})", file=sys.stderr)
        return []


extensions = text_parsers()
# imported after numba.pycc has put its build_ext (which compiles the exported functions) in place
from setuptools.command.build_ext import build_ext  # noqa: E402


class OptionalBuildExt(build_ext):
    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - as above: the parsers then compile on first use
            print(f"warning: the text parsers are not compiled ahead of time ({type(e).__name__}: {e})",
                  file=sys.stderr)


setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
