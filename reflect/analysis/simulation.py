"""Simulated ablations: the error rates and seed costs of a design, measured with the engine's own replay.

Each simulated ablation draws its arms' true gains, then per-seed paired gains ``true + σ·N(0, 1)``, and
runs :func:`reflect.analysis.sequential.replay` exactly as the engine does (the same looks, boundaries and
Holm steps). The fixed-``max`` verdict of the same data (every seed, one look) is the reference that the
sequential design should reach with fewer seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from reflect.analysis.sequential import replay

EffectSampler = Callable[[np.random.Generator, int], np.ndarray]  # (rng, arms) → true gains


@dataclass(frozen=True)
class SimulationResult:
    """Attributes:
        ablations: simulated ablations.
        arms: compared arms per ablation.
        verdicts: counts of each verdict over all arms.
        false_better: share of ablations with at least one arm called better while its true gain ≤ margin.
        false_worse: the same for worse (true gain ≥ −margin).
        agreement: share of ablations whose every arm's sequential verdict equals the fixed-max verdict on
            the same data.
        seed_fraction: trials the sequential design ran (each arm to its deciding look, the baseline as far as
            the last undecided arm) / the trials of the fixed-max design ((arms + 1) × max).
    """

    ablations: int
    arms: int
    verdicts: dict[str, int]
    false_better: float
    false_worse: float
    agreement: float
    seed_fraction: float


def simulate(effects: EffectSampler, sd: float, margin: float, looks: Sequence[int], alpha: float = 0.025,
             arms: int = 1, ablations: int = 2000, seed: int = 0) -> SimulationResult:
    """Simulate ``ablations`` ablations of ``arms`` arms each under a sequential design with ``looks``.

    Args:
        effects: draws the true gains of an ablation's arms.
        sd: the paired per-seed spread σ_d.
        margin: the decision margin.
        looks: the planned seed counts (the last is max).
        alpha: the one-sided error per side.
        arms: arms compared with the baseline per ablation.
        ablations: how many to simulate.
        seed: the random seed of the simulation.
    """
    rng = np.random.default_rng(seed)
    max_seeds = looks[-1]
    seeds = list(range(max_seeds))
    counts = {v: 0 for v in ("better", "worse", "equivalent", "inconclusive")}
    false_better = false_worse = agree = 0
    trials = 0
    for _ in range(ablations):
        truth = np.asarray(effects(rng, arms), dtype=np.float64)
        draws = truth[:, None] + sd * rng.standard_normal((arms, max_seeds))
        gains = {f"arm{i}": dict(zip(seeds, draws[i].tolist())) for i in range(arms)}
        sequential, _ = replay(gains, seeds, looks, alpha, margin)
        fixed, _ = replay(gains, seeds, (max_seeds,), alpha, margin)
        fb = fw = False
        same = True
        used = [sequential[f"arm{i}"].decided_at or max_seeds for i in range(arms)]
        for i in range(arms):
            verdict = sequential[f"arm{i}"].verdict
            counts[verdict] += 1
            fb |= verdict == "better" and truth[i] <= margin
            fw |= verdict == "worse" and truth[i] >= -margin
            same &= verdict == fixed[f"arm{i}"].verdict
        trials += sum(used) + max(used)
        false_better += fb
        false_worse += fw
        agree += same
    return SimulationResult(ablations, arms, counts, false_better / ablations, false_worse / ablations,
                            agree / ablations, trials / (ablations * (arms + 1) * max_seeds))


def at_margin(margin: float) -> EffectSampler:
    """Every arm's true gain exactly at +margin: the worst case for a false 'better'."""
    return lambda rng, arms: np.full(arms, margin)


def null_effect() -> EffectSampler:
    """A/A: every arm's true gain is 0."""
    return lambda rng, arms: np.zeros(arms)


def uniform_effects(low: float, high: float) -> EffectSampler:
    """True gains uniform on [low, high] (a spread of decisions, from clear losses to clear gains)."""
    return lambda rng, arms: rng.uniform(low, high, arms)
