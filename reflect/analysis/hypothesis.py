"""One-sided paired t-tests against a margin, TOST equivalence, and intervals at a matching level.

Every function takes the per-seed *gains* (arm − baseline, sign-flipped for metrics where lower is
better, so positive always means "the arm is better") and a one-sided level. A verdict and the interval
shown with it come from the same level, so they never disagree:

- better:     H0 gain ≤ +margin rejected  ⇔  the lower bound of the (1 − 2·level) interval is > +margin
- worse:      H0 gain ≥ −margin rejected  ⇔  the upper bound is < −margin
- equivalent: both H0 gain ≤ −margin and H0 gain ≥ +margin rejected (TOST)  ⇔  the interval lies inside
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats as sps

FAMILIES = ("better", "worse", "equivalent")


@dataclass(frozen=True)
class LookTest:
    """One verdict's test at one look.

    Attributes:
        family: "better", "worse" or "equivalent".
        statistic: the t statistic (for TOST, the one of the two one-sided tests with the larger p-value).
        df: degrees of freedom (paired seeds − 1).
        p_value: the nominal p-value of this look's test (for TOST, the larger of its two p-values).
        level: the boundary it is compared with (the look's level at this arm's Holm weight).
        rejected: p_value ≤ level.
    """

    family: str
    statistic: float
    df: int
    p_value: float
    level: float
    rejected: bool


def _mean_se(gains: Sequence[float]) -> tuple[float, float, int]:
    x = np.asarray(gains, dtype=np.float64)
    if len(x) < 2:
        raise ValueError(f"a paired t-test needs at least 2 paired seeds, got {len(x)}")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))), len(x) - 1


def _t_and_p_greater(mean: float, se: float, null: float, df: int) -> tuple[float, float]:
    """t and p of H1: mean > null. With zero spread the data decide exactly (p 0 or 1)."""
    diff = mean - null
    if se == 0.0:
        return (math.copysign(math.inf, diff) if diff else 0.0), (0.0 if diff > 0 else 1.0)
    t = diff / se
    return t, float(sps.t.sf(t, df))


def superiority_test(gains: Sequence[float], null: float, level: float) -> LookTest:
    """Superiority by margin: H0 gain ≤ ``null`` vs H1 gain > ``null`` (one-sided paired t-test)."""
    mean, se, df = _mean_se(gains)
    t, p = _t_and_p_greater(mean, se, null, df)
    return LookTest("better", t, df, p, level, p <= level)


def inferiority_test(gains: Sequence[float], null: float, level: float) -> LookTest:
    """Inferiority by margin: H0 gain ≥ ``null`` vs H1 gain < ``null``."""
    mean, se, df = _mean_se(gains)
    t, p = _t_and_p_greater(-mean, se, -null, df)
    return LookTest("worse", -t, df, p, level, p <= level)


def equivalence_test(gains: Sequence[float], margin: float, level: float) -> LookTest:
    """TOST: H0 |gain| ≥ margin vs H1 −margin < gain < +margin; p is the larger of the two one-sided p's.

    Same numbers as statsmodels' ``ttost_paired(arm, baseline, -margin, margin)`` (tested), computed here
    because that function cannot take a zero-spread sample (identical arms) and needs both raw samples.
    """
    mean, se, df = _mean_se(gains)
    t_low, p_low = _t_and_p_greater(mean, se, -margin, df)
    t_up, p_up = _t_and_p_greater(-mean, se, -margin, df)
    t, p = (t_low, p_low) if p_low >= p_up else (-t_up, p_up)
    return LookTest("equivalent", t, df, p, level, p <= level)


def interval(gains: Sequence[float], level: float) -> Optional[tuple[float, float]]:
    """The two-sided (1 − 2·level) t-interval of the mean gain; None below two seeds."""
    if len(gains) < 2:
        return None
    mean, se, df = _mean_se(gains)
    half = float(sps.t.isf(level, df)) * se if se > 0 else 0.0
    return mean - half, mean + half


def verdict_from_interval(ci: Optional[tuple[float, float]], margin: float) -> str:
    """The verdict an interval of the gain shows (the same as its level's tests give)."""
    if ci is None:
        return "inconclusive"
    lo, hi = ci
    if lo > margin:
        return "better"
    if hi < -margin:
        return "worse"
    if lo > -margin and hi < margin:
        return "equivalent"
    return "inconclusive"


def family_test(family: str, gains: Sequence[float], margin: float, level: float) -> LookTest:
    if family == "better":
        return superiority_test(gains, margin, level)
    if family == "worse":
        return inferiority_test(gains, -margin, level)
    return equivalence_test(gains, margin, level)
