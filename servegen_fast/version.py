"""The installed package's version (written into every trace's and result's metadata)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("servegen-fast")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
