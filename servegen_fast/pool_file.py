"""Kept for imports written against earlier releases; the home is `servegen_fast.io.pool_file`."""
from .io.pool_file import open_pool, save_pool

__all__ = ["open_pool", "save_pool"]
