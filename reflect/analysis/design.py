"""Group-sequential boundaries for a seed design (:class:`reflect.ablation.seeds.SeedDesign`).

A verdict is taken only at a *look*: a planned seed count (e.g. 3, 5, 8). With one look this is an
ordinary fixed-n paired t-test at level α per side. With several, every look's one-sided test compares
its nominal t-test p-value with a boundary level ``a_k`` chosen so that the chance of *any* false
rejection over all the looks stays at α (per side), whatever the paired spread σ.

How the boundaries are found (hand-written: statsmodels and scipy have no group-sequential design, and
the z-statistic designs of R's gsDesign/rpact assume a known σ, which three seeds do not give us):
under the null at the margin, the paired t-statistics at the looks have a joint distribution that does
not depend on σ (scale invariance) or on the margin, so one simulation of standard-normal paths fixes
them for every ablation. The α is spent over the looks with the Hwang–Shih–DeCani function (γ = −2):
``α(t) = α (1 − e^{−γt}) / (1 − e^{−γ})`` at information fraction ``t = n_k / n_max``, and each ``a_k``
is the quantile of the paths still running that spends exactly the look's share. The simulation has a
fixed seed, so boundaries are identical on every run (no Monte Carlo noise between two reports).
γ = −2 was chosen by simulation (benches/bench_decisions.py): it keeps the final look close to the
fixed-n level (the sequential verdict agrees with the fixed-max verdict in ≥ 97% of simulated
ablations) while letting clear effects stop at the first look.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats as sps

SPENDING_GAMMA = -2.0
CALIBRATION_PATHS = 200_000
CALIBRATION_SEED = 20261201


def spending(alpha: float, fraction: np.ndarray, gamma: float = SPENDING_GAMMA) -> np.ndarray:
    """Hwang–Shih–DeCani α-spending: the α spent up to information ``fraction`` (0..1)."""
    fraction = np.asarray(fraction, dtype=np.float64)
    if gamma == 0:
        return alpha * fraction
    return alpha * (1 - np.exp(-gamma * fraction)) / (1 - np.exp(-gamma))


@lru_cache(maxsize=16)
def _null_p_paths(looks: tuple[int, ...]) -> np.ndarray:
    """Nominal one-sided p-values ``[paths, looks]`` of the paired t-test at each look, under the null."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    draws = rng.standard_normal((CALIBRATION_PATHS, looks[-1]))
    columns = []
    for n in looks:
        x = draws[:, :n]
        t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / np.sqrt(n))
        columns.append(sps.t.sf(t, n - 1))
    return np.stack(columns, axis=1)


@lru_cache(maxsize=256)
def _boundaries_cached(looks: tuple[int, ...], alpha_key: float) -> tuple[float, ...]:
    alpha = float(alpha_key)
    if len(looks) == 1:
        return (alpha,)
    paths = _null_p_paths(looks)
    spent = spending(alpha, np.asarray(looks, dtype=np.float64) / looks[-1])
    running = np.ones(len(paths), dtype=bool)
    levels, spent_before = [], 0.0
    for k in range(len(looks)):
        if k == 0:
            # the first look's p-value is exactly uniform under the null: its level is the α spent there
            level = float(spent[0])
            levels.append(level)
            running &= ~(paths[:, 0] <= level)
            spent_before = float(np.mean(~running))
            continue
        rejections = int(np.floor((spent[k] - spent_before) * len(paths)))
        spent_before = spent[k]
        alive = paths[running, k]
        level = 0.0 if rejections <= 0 else float(np.partition(alive, rejections - 1)[rejections - 1])
        levels.append(level)
        running &= ~(paths[:, k] <= level)
    return tuple(levels)


def boundaries(looks: tuple[int, ...] | list[int], alpha: float) -> tuple[float, ...]:
    """Nominal one-sided levels ``a_k``: look ``k`` rejects its null when the t-test p-value is ≤ ``a_k``.

    Args:
        looks: increasing seed counts (each ≥ 2 when there are several).
        alpha: the overall one-sided error to spend over all looks (e.g. 0.025, or 0.025/3 under Holm).

    Returns:
        One level per look; ``(alpha,)`` for a single look (the fixed design).
    """
    looks = tuple(int(n) for n in looks)
    if len(looks) == 1 and looks[0] >= 1:
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha: expected a one-sided level in (0, 0.5), got {alpha}")
        return (round(float(alpha), 12),)  # a fixed design: one test at α (it needs 2 seeds to test anything)
    if not looks or any(n < 2 for n in looks) or list(looks) != sorted(set(looks)):
        raise ValueError(f"looks: expected increasing seed counts of at least 2, got {list(looks)}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha: expected a one-sided level in (0, 0.5), got {alpha}")
    return _boundaries_cached(looks, round(float(alpha), 12))
