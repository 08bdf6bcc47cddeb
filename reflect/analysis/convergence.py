"""Is an arm still climbing through its averaging window? A slope test on the window's evaluations.

If the metric still rises over the evaluations the window averages, the windowed mean sits below where
training would end, and a verdict compares learning speed as much as final quality.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats as sps

from reflect.ablation.store import TrialRecord
from reflect.analysis.windows import window_points

TREND_LEVEL = 0.05  # one-sided


@dataclass(frozen=True)
class Convergence:
    """The trend of one arm's metric over its window, across its seeds.

    Attributes:
        rise: mean change over the window (last − first evaluation step, from each seed's fitted slope),
            signed so that positive means "improving"; metric units.
        p_value: one-sided p of "improving" (seeds' rises vs 0, a t-test; one seed: the regression's own).
        still_improving: p ≤ 0.05 and the rise exceeds the decision margin.
        seeds: trials the estimate uses.
        steps: (first, last) evaluation step of the window.
    """

    rise: Optional[float]
    p_value: Optional[float]
    still_improving: bool
    seeds: int
    steps: Optional[tuple[int, int]]


def window_trend(records: Sequence[TrialRecord], metric: str, window: int, sign: float, margin: float) -> Convergence:
    """The convergence check of an arm from its complete records (``sign`` −1 for metrics to minimise)."""
    rises, single_p, steps = [], None, None
    for rec in records:
        points = window_points(rec.eval_history, metric, window)
        if len(points) < 3:
            continue
        x = np.array([p[0] for p in points], dtype=np.float64)
        y = sign * np.array([p[1] for p in points], dtype=np.float64)
        fit = sps.linregress(x, y)
        rises.append(float(fit.slope * (x[-1] - x[0])))
        steps = (int(x[0]), int(x[-1]))
        if fit.stderr > 0:
            single_p = float(sps.t.sf(fit.slope / fit.stderr, len(x) - 2))
        else:
            single_p = 0.0 if fit.slope > 0 else 1.0
    if not rises:
        return Convergence(None, None, False, 0, None)
    mean_rise = float(np.mean(rises))
    if len(rises) == 1:
        p = single_p
    else:
        sd = float(np.std(rises, ddof=1))
        p = float(sps.t.sf(mean_rise / (sd / np.sqrt(len(rises))), len(rises) - 1)) if sd > 0 else (
            0.0 if mean_rise > 0 else 1.0)
    return Convergence(mean_rise, p, bool(p is not None and p <= TREND_LEVEL and mean_rise > margin), len(rises), steps)
