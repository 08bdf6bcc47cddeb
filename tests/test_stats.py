"""Verdict statistics: paired deltas, t intervals, and the four verdicts."""

import pytest
from scipy import stats as sps

from reflect.stats import mean_ci, paired_deltas, verdict


def test_mean_ci_matches_student_t():
    vals = [1.0, 2.0, 3.0, 4.0]
    est = mean_ci(vals, 0.95)
    sem = sps.sem(vals)
    half = sps.t.ppf(0.975, df=3) * sem
    assert est.n == 4 and est.mean == pytest.approx(2.5)
    assert est.ci == pytest.approx((2.5 - half, 2.5 + half))


def test_mean_ci_needs_two_values_and_ignores_nonfinite():
    assert mean_ci([1.0], 0.95).ci is None
    assert mean_ci([], 0.95).mean is None
    assert mean_ci([1.0, float("nan"), 3.0], 0.95).n == 2
    assert mean_ci([2.0, 2.0], 0.95).ci == (2.0, 2.0)


def test_paired_deltas_use_shared_seeds_only():
    assert paired_deltas({0: 30.0, 1: 31.0, 2: 29.0}, {0: 29.5, 1: 30.0}) == [0.5, 1.0]


@pytest.mark.parametrize(
    "ci, mode, expected",
    [
        ((0.2, 0.5), "max", "better"),
        ((-0.5, -0.2), "max", "worse"),
        ((-0.05, 0.08), "max", "equivalent"),
        ((-0.3, 0.4), "max", "inconclusive"),
        ((0.05, 0.5), "max", "inconclusive"),
        ((-0.5, -0.2), "min", "better"),  # lower is better (e.g. LPIPS)
        (None, "max", "inconclusive"),
    ],
)
def test_verdicts(ci, mode, expected):
    assert verdict(ci, 0.1, mode) == expected
