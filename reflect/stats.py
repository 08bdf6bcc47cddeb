"""Verdicts from seeds: paired differences vs the baseline with a t confidence interval.

Seeds are a replicate axis with common random numbers (every arm runs the same
seed list on the same evaluation frames), so an arm is compared with the
baseline seed by seed. Verdict rules (in dB, sign flipped for 'min' metrics):
better: CI entirely above +min_effect; worse: CI entirely below −min_effect;
equivalent: CI inside [−min_effect, +min_effect]; otherwise inconclusive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from scipy import stats as sps

VERDICTS = ("better", "worse", "equivalent", "inconclusive")


@dataclass
class Estimate:
    n: int
    mean: Optional[float]
    ci: Optional[tuple[float, float]]


def mean_ci(values: Sequence[float], confidence: float) -> Estimate:
    """Student-t interval of the mean (None when fewer than two values)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return Estimate(0, None, None)
    m = float(x.mean())
    if len(x) < 2:
        return Estimate(len(x), m, None)
    sem = float(x.std(ddof=1) / math.sqrt(len(x)))
    if sem == 0.0:
        return Estimate(len(x), m, (m, m))
    lo, hi = sps.t.interval(confidence, df=len(x) - 1, loc=m, scale=sem)
    return Estimate(len(x), m, (float(lo), float(hi)))


def verdict(delta_ci: Optional[tuple[float, float]], min_effect: float, mode: str = "max") -> str:
    if delta_ci is None:
        return "inconclusive"
    lo, hi = delta_ci if mode == "max" else (-delta_ci[1], -delta_ci[0])
    if lo > min_effect:
        return "better"
    if hi < -min_effect:
        return "worse"
    if lo >= -min_effect and hi <= min_effect:
        return "equivalent"
    return "inconclusive"


def paired_deltas(arm: dict[int, float], baseline: dict[int, float]) -> list[float]:
    """Per-seed differences on the seeds both arms completed."""
    return [arm[s] - baseline[s] for s in sorted(set(arm) & set(baseline))]


def windowed(history: list[dict[str, Any]], key: str, window: int) -> Optional[float]:
    """Mean of the last ``window`` evaluations of ``key`` (the roadmap's "avg20")."""
    vals = [h[key] for h in history if h.get(key) is not None and math.isfinite(h[key])]
    return float(np.mean(vals[-window:])) if vals else None
