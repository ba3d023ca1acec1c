"""A one-line progress bar on a text stream, redrawn at most five times a second."""
from __future__ import annotations

import sys
import time


class ProgressLine:
    def __init__(self, enabled: bool, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.last = 0.0

    def show(self, frac: float, text: str, final: bool = False) -> None:
        """Draw `[####    ] 42.0%  text`; skipped when disabled or drawn < 0.2 s ago (unless final)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        self.stream.write(f"\r[{'#' * int(frac * 24):<24}] {frac:6.1%}  {text} ")
        if final:
            self.stream.write("\n")
        self.stream.flush()
