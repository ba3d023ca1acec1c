"""The one progress line of every long job (generation, replay), redrawn at most five times a second."""
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


class RowsProgress:
    """Generation progress: requests written, rate, simulated time done, elapsed and ETA."""

    def __init__(self, total_seconds: float, enabled: bool, stream=None):
        self.total = max(float(total_seconds), 1e-9)
        self.line = ProgressLine(enabled, stream)
        self.t0 = time.perf_counter()

    def __call__(self, rows: int, done_seconds: float, final: bool = False) -> None:
        el = time.perf_counter() - self.t0
        frac = min(done_seconds / self.total, 1.0)
        eta = el * (1 - frac) / frac if frac > 0 else float("nan")
        self.line.show(frac, f"{rows:,} requests  {rows / max(el, 1e-9) / 1e6:.2f} M req/s  "
                             f"elapsed {el:5.1f}s  ETA {eta:5.1f}s", final)
