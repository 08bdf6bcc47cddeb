"""Loss weights as functions of the training step (see :class:`ScheduleConfig` for the kinds)."""
from __future__ import annotations

import math

from reflect.losses.config import ScheduleConfig


def weight_at(s: ScheduleConfig, step: int, total_steps: int) -> float:
    """The weight at ``step``; waypoints (``start``, ``end``) are hit exactly.

    Fractions are multiplied by ``total_steps``, so a shortened run keeps the
    schedule's shape; ``units: steps`` boundaries are used as given.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps: expected a positive integer, got {total_steps}")
    if s.kind == "constant":
        return float(s.value)
    scale = total_steps if s.units == "fraction" else 1
    start, end = s.start * scale, s.end * scale
    if step < start:
        return 0.0 if s.kind == "deferred_exp" else float(s.initial)
    if s.kind == "step" or step >= end:
        return float(s.value)
    p = (step - start) / (end - start)
    if s.kind == "linear":
        return float(s.initial + (s.value - s.initial) * p)
    if s.kind == "deferred_exp":
        # expm1 is exactly 0 at p = 0, so the ramp starts from exactly 0.
        return float(s.value * (math.expm1(s.sharpness * p) / math.expm1(s.sharpness)))
    raise ValueError(f"kind: expected one of constant|linear|step|deferred_exp, got {s.kind!r}")
