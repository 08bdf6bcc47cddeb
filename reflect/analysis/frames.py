"""Per-frame description beside the seed-level verdict: which evaluation frames improved, and the worst.

The verdict is taken on seeds (the replicate); frames are description only: the share of frames whose
paired gain (averaged over the window's evaluations and the paired seeds) is positive, and the frames
that lost the most.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from reflect.ablation.store import TrialRecord

WORST_FRAMES = 3


@dataclass(frozen=True)
class FrameSummary:
    """Attributes:
        frames: evaluation frames compared.
        share_improved: the share of them whose mean paired gain is > 0.
        worst: (frame id, mean paired gain) of the frames that lost most, worst first.
        evaluations: evaluations per trial averaged (the window, or 1 for records that kept only the last).
    """

    frames: int
    share_improved: Optional[float]
    worst: tuple[tuple[str, float], ...]
    evaluations: int


def frame_means(record: TrialRecord, split: str, key: str, window_steps: Optional[set[int]]) -> tuple[dict[str, float], int]:
    """Per frame id, the mean of ``key`` over the window's evaluations of ``split`` (and how many there were)."""
    history = [h for h in record.per_frame_history if window_steps is None or h.get("step") in window_steps]
    if not history and record.per_frame:
        history = [{"splits": record.per_frame}]  # records from before per-frame history: the final evaluation
    sums: dict[str, list[float]] = {}
    for entry in history:
        frames = entry.get("splits", {}).get(split, {})
        for frame_id, value in zip(frames.get("frame_id", []), frames.get(key, [])):
            if value is not None and math.isfinite(value):
                sums.setdefault(str(frame_id), []).append(float(value))
    return {f: sum(v) / len(v) for f, v in sums.items()}, len(history)


def _window_steps(record: TrialRecord, metric: str, window: int) -> Optional[set[int]]:
    """The steps of the evaluations a trial's windowed metric averages (each trial its own)."""
    steps = sorted(int(h["step"]) for h in record.eval_history if h.get(metric) is not None)
    return set(steps[-window:]) if steps else None


def compare_frames(arm: dict[int, TrialRecord], baseline: dict[int, TrialRecord], seeds: Sequence[int], metric: str,
                   window: int, sign: float) -> Optional[FrameSummary]:
    """Per-frame paired gains of an arm on ``seeds`` (both trials complete); None when no frame is shared."""
    split, key = metric.split("/", 1)
    gains: dict[str, list[float]] = {}
    evaluations = 0
    for seed in seeds:
        a, b = arm.get(seed), baseline.get(seed)
        if a is None or b is None:
            continue
        mine, evaluations = frame_means(a, split, key, _window_steps(a, metric, window))
        theirs, _ = frame_means(b, split, key, _window_steps(b, metric, window))
        for frame_id in mine.keys() & theirs.keys():
            gains.setdefault(frame_id, []).append(sign * (mine[frame_id] - theirs[frame_id]))
    if not gains:
        return None
    mean_gain = {f: sum(v) / len(v) for f, v in gains.items()}
    worst = sorted(mean_gain.items(), key=lambda kv: (kv[1], kv[0]))[:WORST_FRAMES]
    share = sum(1 for g in mean_gain.values() if g > 0) / len(mean_gain)
    return FrameSummary(len(mean_gain), share, tuple((f, float(g)) for f, g in worst), evaluations)
