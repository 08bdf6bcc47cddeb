"""Power: the minimum detectable effect (MDE) of a paired design, and the seeds an effect needs.

The MDE at ``n`` seeds is the true gain that the one-sided superiority test (null: gain ≤ margin) at
``level`` detects with 80% power, from the noncentral t (statsmodels' ``TTestPower``): ``margin + d·σ``
where ``d`` is the standardised effect statsmodels solves for. At a sequential look the level is that
look's boundary, which ignores the chance of stopping at an earlier look: a slight understatement of
power (the design can only do better), stated in the report.
"""
from __future__ import annotations

import math
from typing import Optional

from statsmodels.stats.power import TTestPower

POWER = 0.8


def minimum_detectable_effect(sd: float, n: int, level: float, margin: float, power: float = POWER) -> Optional[float]:
    """The gain (metric units) detected with ``power`` by ``n`` paired seeds at one-sided ``level``.

    Args:
        sd: the paired per-seed spread σ_d (metric units).
        n: paired seeds (≥ 2).
        level: one-sided test level (a look's boundary).
        margin: the smallest effect worth acting on; the test's null is gain ≤ margin.
        power: the power to reach (0.8).

    Returns:
        The MDE, or None when ``n`` < 2 or the level is 0 (a look that cannot reject).
    """
    if n < 2 or level <= 0 or not math.isfinite(sd):
        return None
    if sd == 0:
        return margin
    d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=level, power=power, alternative="larger")
    return margin + float(d) * sd
