"""Release timing shared by every replayer: the one clock and the one wait for a release time."""
from __future__ import annotations

import time
from typing import Callable

# perf_counter: monotonic, sub-microsecond, and system-wide on Linux (CLOCK_MONOTONIC), so worker
# processes and engine threads stamp on the same time line as the release loop.
CLOCK: Callable[[], float] = time.perf_counter
