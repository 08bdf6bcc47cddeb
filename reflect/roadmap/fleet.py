"""The fleet: every complete trial the harness can see, grouped into configurations (one group = one
config across its seeds), and the recorded benchmarks and sign-offs the gates read.

A group is (study, arm, the result-relevant config without its seed, the dataset fingerprint): the seeds of
one configuration, whose spread gives the interval a gate decides on.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy import stats as sps

from reflect.ablation.store import COMPLETE, ResultsStore, TrialRecord
from reflect.analysis.windows import windowed
from reflect.config import strip_non_identity

BENCHMARKS_DIR = "benchmarks"
LATENCY_FILE = "latency.jsonl"


@dataclass(frozen=True)
class TrialGroup:
    """One configuration's complete trials (its seeds)."""

    study: str
    arm: str
    group_id: str
    records: tuple[TrialRecord, ...]

    @property
    def label(self) -> str:
        return f"{self.study}/{self.arm}"

    @property
    def synthetic(self) -> bool:
        """Trained on the embedded synthetic head (no data root, no sessions); unknown configs are not."""
        config = self.records[0].config or {}
        if "data" not in config:
            return False
        data = config["data"] or {}
        return data.get("root") is None and not data.get("sessions")

    def effective_window(self, metric: str, window: int) -> int:
        """``window``, or — when a trial made fewer evaluations — its own ablation's window (the quick profile's
        avg5 stands for the roadmap's avg20 at full-profile evaluation rates), never the early ramp of a short run."""
        if self.evaluations(metric) >= window:
            return window
        own = [r.metric_window for r in self.records if r.metric_window]
        return min(own) if own else window

    def values(self, metric: str, window: int) -> dict[int, float]:
        """Per seed, the mean of the last ``effective_window(metric, window)`` evaluations of ``metric``."""
        out = {}
        window = self.effective_window(metric, window)
        for r in self.records:
            v = windowed(r.eval_history, metric, window)
            if v is not None and math.isfinite(v):
                out[r.seed] = v
        return out

    def evaluations(self, metric: str) -> int:
        return min((sum(1 for h in r.eval_history if h.get(metric) is not None) for r in self.records), default=0)


@dataclass(frozen=True)
class Estimate:
    """A group's windowed metric over seeds: mean, the two-sided interval at ``confidence``, spread."""

    group: TrialGroup
    n: int
    mean: float
    sd: Optional[float]
    interval: Optional[tuple[float, float]]
    window_used: int


def group_id(record: TrialRecord) -> str:
    config = strip_non_identity(copy.deepcopy(record.config or {}))
    config.pop("seed", None)
    config["data_fingerprint"] = (record.protocol or {}).get("dataset_fingerprint")
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_fleet(runs_dirs: Sequence[str | Path]) -> list[TrialGroup]:
    """Every complete record under each runs folder (``<runs>/<study>/trials/*.json``), grouped by config."""
    groups: dict[tuple[str, str, str], list[TrialRecord]] = {}
    for runs in runs_dirs:
        runs = Path(runs)
        if not runs.is_dir():
            continue
        for study_dir in sorted(p for p in runs.iterdir() if (p / "trials").is_dir()):
            for rec in ResultsStore(study_dir).records():
                if rec.status == COMPLETE:
                    groups.setdefault((rec.study, rec.arm, group_id(rec)), []).append(rec)
    return [TrialGroup(study, arm, gid, tuple(sorted(recs, key=lambda r: r.seed)))
            for (study, arm, gid), recs in sorted(groups.items())]


def estimate(group: TrialGroup, metric: str, window: int, confidence: float = 0.95) -> Optional[Estimate]:
    """The mean over seeds of a configuration's windowed ``metric``, with its t interval.

    Args:
        group: one configuration's trials (one per seed).
        metric: e.g. ``val/psnr``.
        window: how many of each trial's last evaluations its value averages.
        confidence: the two-sided level of the interval.
    Returns:
        None when no trial evaluated ``metric``; else the Estimate, with no spread or interval from one seed.
    """
    values = list(group.values(metric, window).values())
    if not values:
        return None
    n, mean = len(values), float(np.mean(values))
    used = min(group.effective_window(metric, window), group.evaluations(metric))
    if n < 2:
        return Estimate(group, n, mean, None, None, used)
    sd = float(np.std(values, ddof=1))
    half = float(sps.t.isf((1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(group, n, mean, sd, (mean - half, mean + half), used)


def best_group(groups: Iterable[TrialGroup], metric: str, window: int, mode: str = "max",
               confidence: float = 0.95) -> Optional[Estimate]:
    """The configuration with the best mean windowed ``metric`` among those with an interval (≥ 2 seeds);
    single-seed configurations only when no configuration has two (ties: more seeds, then the label).

    Why: a lucky single seed has the highest mean more often than not, and it gives no interval to decide on.
    """
    estimates = [e for e in (estimate(g, metric, window, confidence) for g in groups) if e is not None]
    if not estimates:
        return None
    with_interval = [e for e in estimates if e.interval is not None] or estimates
    sign = 1.0 if mode == "max" else -1.0
    return max(with_interval, key=lambda e: (sign * e.mean, e.n, e.group.label))


def latency_records(runs_dirs: Sequence[str | Path]) -> list[dict]:
    """Recorded latency benchmarks (``<runs>/benchmarks/latency.jsonl``, written by benches/bench_latency.py)."""
    out = []
    for runs in runs_dirs:
        path = Path(runs) / BENCHMARKS_DIR / LATENCY_FILE
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed benchmark: the others stand
    return out
