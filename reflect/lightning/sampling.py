"""Training frame samplers: uniform, rare-expression oversampling, session-aware.

The sampler draws the whole sequence of frame indices up front from the trial
seed, and starts iterating at the trainer's current step: a run resumed from a
checkpoint sees exactly the frames an uninterrupted run would have seen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import Sampler


@dataclass
class SamplerConfig:
    # 0 = uniform; p > 0 weights each frame by (its kNN distance in expression space)^p,
    # so rare, extreme expressions are drawn more often (MonoGaussianAvatar).
    rare_expression_power: float = 0.0
    rare_expression_k: int = 8
    max_weight_ratio: float = 10.0  # cap on a frame's weight relative to the median frame
    # Session-aware sampling: each session gets a fixed share of draws whatever its size.
    session_balance: bool = False
    session_shares: Optional[List[float]] = None  # default: equal shares

    def validate(self) -> None:
        if self.rare_expression_power < 0:
            raise ValueError(f"rare_expression_power: expected >= 0, got {self.rare_expression_power}")
        if self.rare_expression_k < 1:
            raise ValueError(f"rare_expression_k: expected >= 1, got {self.rare_expression_k}")
        if self.max_weight_ratio < 1:
            raise ValueError(f"max_weight_ratio: expected >= 1, got {self.max_weight_ratio}")
        if self.session_shares is not None and (
                not self.session_shares or not all(math.isfinite(s) and s > 0 for s in self.session_shares)):
            raise ValueError(f"session_shares: expected a non-empty list of finite positive numbers (one per "
                             f"session) or null, got {self.session_shares}")


def rare_expression_weights(codes: np.ndarray, k: int, power: float, max_ratio: float) -> np.ndarray:
    """Inverse-density weights: mean distance to the k nearest neighbours in standardised code space."""
    x = (codes - codes.mean(0)) / (codes.std(0) + 1e-6)
    t = torch.as_tensor(x, dtype=torch.float32)
    k = min(k, len(t) - 1)
    if k < 1:
        return np.ones(len(codes))
    dists = []
    for start in range(0, len(t), 2048):
        d = torch.cdist(t[start : start + 2048], t)
        dists.append(d.topk(k + 1, largest=False).values[:, 1:].mean(-1))
    spread = torch.cat(dists).numpy().astype(np.float64)
    w = np.power(spread / max(np.median(spread), 1e-12), power)
    return np.minimum(w, max_ratio)


def frame_weights(cfg: SamplerConfig, codes: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """Per-frame draw probabilities combining the configured strategies (they compose)."""
    w = np.ones(len(codes), dtype=np.float64)
    if cfg.rare_expression_power > 0:
        w *= rare_expression_weights(codes, cfg.rare_expression_k, cfg.rare_expression_power, cfg.max_weight_ratio)
    if cfg.session_balance:
        ids = np.unique(sessions)
        shares = cfg.session_shares or [1.0] * len(ids)
        if len(shares) != len(ids):  # the config's count was checked on load; this is the data's (allowlists)
            from reflect.data.errors import DatasetError

            raise DatasetError(f"sampler.session_shares has {len(shares)} shares, but the training data has "
                               f"{len(ids)} session{'s' if len(ids) != 1 else ''} with frames: give one share per "
                               f"session ({len(ids)})")
        for sid, share in zip(ids, shares):
            sel = sessions == sid
            w[sel] *= share / w[sel].sum()
    return w / w.sum()


class StepIndexedSampler(Sampler[int]):
    """Draws ``total_steps × batch_size`` indices once; iteration resumes at ``start_step()``."""

    def __init__(self, weights: np.ndarray, total_steps: int, batch_size: int, seed: int,
                 start_step: Callable[[], int] = lambda: 0):
        self.batch_size = batch_size
        self.start_step = start_step
        rng = np.random.default_rng(seed)
        uniform = np.allclose(weights, weights[0])
        n = total_steps * batch_size
        self.indices = (
            rng.integers(0, len(weights), n) if uniform else rng.choice(len(weights), size=n, p=weights)
        ).tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices[self.start_step() * self.batch_size :])
