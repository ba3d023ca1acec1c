"""Kept for imports written against earlier releases; the home is `servegen_fast.sample.generate`."""
from .sample.generate import MODES, GenerateOptions, generate, generate_table

__all__ = ["MODES", "GenerateOptions", "generate", "generate_table"]
