"""ServeGen's ``servegen.workload_types``: the category and arrival-pattern enums and the
per-window record that `ClientPoolView.get()` returns."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Dict, List, Optional, Tuple


class Category(Enum):
    LANGUAGE = "language"
    MULTIMODAL = "multimodal"
    REASON = "reason"


class ArrivalPat(Enum):
    GAMMA = "Gamma"
    WEIBULL = "Weibull"


@dataclass
class ClientWindow:
    """One client's data in one (possibly truncated) window of a view; times relative to the view."""
    client_id: int
    timestamp: int
    window_size: int
    rate: Optional[float] = None
    cv: Optional[float] = None
    arrival_pat: Optional[Tuple[str, Tuple[float, ...]]] = None
    dataset: Optional[Dict[str, List[float]]] = None


__all__ = ["Category", "ArrivalPat", "ClientWindow"]
