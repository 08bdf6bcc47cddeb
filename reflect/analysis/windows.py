"""The windowed metric: how a noisy curve of evaluations is reduced to one number per trial."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def windowed(history: list[dict[str, Any]], key: str, window: int) -> Optional[float]:
    """Mean of the last ``window`` evaluations of ``key`` (the roadmap's "avg20"); None if none is finite."""
    vals = [h[key] for h in history if h.get(key) is not None and math.isfinite(h[key])]
    return float(np.mean(vals[-window:])) if vals else None


def window_points(history: list[dict[str, Any]], key: str, window: int) -> list[tuple[int, float]]:
    """The (step, value) evaluations the window averages."""
    points = [(int(h["step"]), float(h[key])) for h in history if h.get(key) is not None and math.isfinite(h[key])]
    return points[-window:]
