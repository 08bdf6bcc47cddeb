"""The trials an ablation may run: one per (arm, seed), each identified by its config hash and seed.

Kept apart from the runner (no Optuna or Lightning here) so that the analysis and the reports can tell
which records belong to the current plan without importing the engine.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from reflect.ablation.spec import Ablation
from reflect.ablation.store import trial_key
from reflect.config import TrainConfig, hash_identity, identity_dict


@dataclass
class PlannedTrial:
    arm: str
    seed: int
    config: TrainConfig
    config_hash: str
    overrides: dict[str, Any]

    @property
    def key(self) -> str:
        return trial_key(self.arm, self.seed, self.config_hash)


def plan_trials(ablation: Ablation, arms: Optional[Sequence[str]] = None,
                seeds: Optional[Sequence[int]] = None) -> list[PlannedTrial]:
    """Trials of ``arms`` (default: all) × ``seeds`` (default: every seed the design may run)."""
    out = []
    for arm in ablation.arms.values():
        if arms is not None and arm.name not in arms:
            continue
        identity = _identity(ablation, arm.name)
        for seed in (ablation.seeds if seeds is None else seeds):
            cfg = copy.deepcopy(arm.config)
            cfg.seed = seed
            out.append(PlannedTrial(arm.name, seed, cfg, hash_identity({**identity, "seed": seed}), arm.overrides))
    return out


def _identity(ablation: Ablation, arm: str) -> dict:
    """The arm's identity dict, built once per loaded ablation (OmegaConf makes building it the slow part)."""
    cache = ablation.identity_cache
    if arm not in cache:
        cache[arm] = identity_dict(ablation.arms[arm].config)
    return cache[arm]


def trial_hashes(ablation: Ablation, seeds: Sequence[int]) -> dict[tuple[str, int], str]:
    """(arm, seed) → today's config hash for ``seeds`` (no configs built: what the reports need)."""
    return {(arm, seed): hash_identity({**_identity(ablation, arm), "seed": seed})
            for arm in ablation.arms for seed in seeds}
