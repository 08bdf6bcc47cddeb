"""Error rates and seed costs of the sequential design, over ≥ 2,000 simulated ablations (no training).

The simulation runs the engine's own replay (same looks, boundaries and Holm steps). Monte Carlo error
of a rate p over N ablations: sqrt(p(1 − p)/N); the bounds below allow three of those.
"""
import math

import pytest

from reflect.analysis.simulation import at_margin, null_effect, simulate, uniform_effects

LOOKS, ALPHA, SD, MARGIN, N = (3, 5, 8), 0.025, 0.1, 0.1, 2000
MC = 3 * math.sqrt(ALPHA * (1 - ALPHA) / N)


@pytest.mark.parametrize("arms, ablations", [(1, 8000), (2, 2000)])
def test_false_better_at_the_margin_stays_at_alpha(arms, ablations):
    result = simulate(at_margin(MARGIN), SD, MARGIN, LOOKS, ALPHA, arms=arms, ablations=ablations, seed=arms)
    assert result.false_better <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / ablations)
    assert result.verdicts["worse"] == 0


@pytest.mark.parametrize("arms", [1, 3])
def test_aa_is_never_better_or_worse_beyond_nominal(arms):
    result = simulate(null_effect(), SD, MARGIN, LOOKS, ALPHA, arms=arms, ablations=N, seed=10 + arms)
    # a true gain of 0 is a margin away from either claim: far below nominal
    assert result.false_better <= ALPHA + MC and result.false_worse <= ALPHA + MC
    assert result.verdicts["better"] + result.verdicts["worse"] <= 2


@pytest.mark.parametrize("arms", [1, 2])
def test_sequential_reaches_the_fixed_max_verdict_with_fewer_seeds(arms):
    """True gains uniform on [−1, +1] dB with σ_d = 0.1 dB (the quick profile's spread)."""
    result = simulate(uniform_effects(-1.0, 1.0), SD, MARGIN, LOOKS, ALPHA, arms=arms, ablations=N, seed=20 + arms)
    assert result.agreement >= 0.95
    assert result.seed_fraction <= 0.75
