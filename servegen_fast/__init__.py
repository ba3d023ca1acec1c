"""servegen-fast: fast, per-client generation of realistic LLM-serving workloads."""
from importlib.metadata import PackageNotFoundError, version as _version

from .pool import ClientPool
from .servegen_format import read_servegen, write_servegen

try:
    __version__ = _version("servegen-fast")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = ["ClientPool", "read_servegen", "write_servegen", "__version__"]
