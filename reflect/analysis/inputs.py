"""From trial records to the inputs of a verdict: which records count, their values, what differs.

Pure functions over :class:`~reflect.ablation.store.TrialRecord` (no Optuna, no Lightning): the records
of the current plan (today's config hash for each arm and seed), grouped per arm, with trials evaluated
under a different protocol set aside and named.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from reflect.ablation.plan import trial_hashes
from reflect.ablation.spec import Ablation
from reflect.ablation.store import COMPLETE, FAILED, PRUNED, TrialRecord
from reflect.analysis.windows import windowed

TERMINAL = (COMPLETE, FAILED, PRUNED)
# Evaluation-protocol fields that make two trials' numbers incomparable when they differ. Not the render backend:
# gsplat, numba and torch implement one rasterizer (the tests hold numba and torch to float rounding of each
# other and of a dense reference, gsplat to 1e-3 mean error), so trials from a CPU and a GPU, or from before and
# after numba became the CPU default, compare; the record and the report still say which one ran.
# The data scored on, not all the data read: a data decision (more sessions) trains on other frames and compares
# on the same ones. Records from before the evaluation fingerprint existed compare on the whole dataset's.
PROTOCOL_FIELDS = ("eval_frame_ids", "eval_dataset_fingerprint", "dataset_fingerprint", "resolution")


@dataclass(frozen=True)
class Exclusion:
    """A trial left out of the comparison because its evaluation protocol differs from the baseline's."""

    key: str
    arm: str
    seed: int
    differences: tuple[str, ...]


@dataclass
class ArmRecords:
    """One arm's records of the current plan, by seed."""

    records: dict[int, TrialRecord] = field(default_factory=dict)
    values: dict[int, float] = field(default_factory=dict)  # complete, finite, same protocol

    def terminal(self, seed: int) -> bool:
        rec = self.records.get(seed)
        return rec is not None and rec.status in TERMINAL

    def failed(self, seeds: Iterable[int]) -> int:
        return sum(1 for s in seeds if s in self.records and self.records[s].status in (FAILED, PRUNED))


@dataclass
class AblationRecords:
    arms: dict[str, ArmRecords]
    exclusions: list[Exclusion]
    reference_protocol: dict[str, Any]


def current_records(ablation: Ablation, records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Records whose config hash is today's for their (arm, seed): older runs stay in the store, unused.

    Seeds outside the design (run by hand with ``--seeds``) count when their config matches today's.
    """
    records = [r for r in records if r.arm in ablation.arms]
    seeds = sorted({*ablation.seeds, *(r.seed for r in records)})
    current = trial_hashes(ablation, seeds)
    return [r for r in records if current.get((r.arm, r.seed)) == r.config_hash]


def protocol_differences(protocol: dict[str, Any], reference: dict[str, Any]) -> tuple[str, ...]:
    """The protocol fields on which two trials differ (fields one of them lacks are not compared; where both
    record the evaluated data's fingerprint, the whole dataset's may differ: training data is what a data
    decision changes)."""
    both_scored = "eval_dataset_fingerprint" in protocol and "eval_dataset_fingerprint" in reference
    return tuple(f for f in PROTOCOL_FIELDS if f in protocol and f in reference and protocol[f] != reference[f]
                 and not (f == "dataset_fingerprint" and both_scored))


def trial_value(record: TrialRecord, metric: str, window: int) -> Optional[float]:
    """The windowed metric under today's window (a record keeps its curve; the file's window may change)."""
    if record.eval_history:
        return windowed(record.eval_history, metric, window)
    return record.windowed_metric if record.metric_name == metric and record.metric_window == window else None


def _reference_protocol(records: list[TrialRecord]) -> dict[str, Any]:
    """The protocol most of the baseline's complete trials share (ties: the lowest seed's), so one odd trial
    cannot set every other aside."""
    if not records:
        return {}
    keyed = [(json.dumps({f: r.protocol.get(f) for f in PROTOCOL_FIELDS}, sort_keys=True, default=str), r)
             for r in records]
    counts = Counter(k for k, _ in keyed)
    top = max(counts.values())
    return next(r.protocol for k, r in keyed if counts[k] == top)


def gather(ablation: Ablation, records: Iterable[TrialRecord]) -> AblationRecords:
    """Group the current plan's records per arm; set aside trials whose protocol differs from the baseline's.

    The reference protocol is the one most of the baseline's complete trials share.
    """
    used = current_records(ablation, records)
    arms = {name: ArmRecords() for name in ablation.arms}
    for rec in sorted(used, key=lambda r: (r.arm, r.seed)):
        arms[rec.arm].records[rec.seed] = rec
    baseline_done = [r for s, r in sorted(arms[ablation.baseline].records.items()) if r.status == COMPLETE]
    reference = _reference_protocol(baseline_done)
    exclusions = []
    for name, arm in arms.items():
        for seed, rec in arm.records.items():
            value = trial_value(rec, ablation.metric.name, ablation.metric.window) if rec.status == COMPLETE else None
            if value is None or not math.isfinite(value):
                continue
            diff = protocol_differences(rec.protocol or {}, reference)
            if diff:
                exclusions.append(Exclusion(rec.key, name, seed, diff))
                continue
            arm.values[seed] = float(value)
    return AblationRecords(arms, exclusions, reference)


def paired_gains(arm: ArmRecords, baseline: ArmRecords, seeds: Iterable[int], sign: float) -> dict[int, float]:
    """Per-seed ``sign × (arm − baseline)`` on the given seeds where both have a value."""
    return {s: sign * (arm.values[s] - baseline.values[s]) for s in seeds if s in arm.values and s in baseline.values}


def pooled_spread(gain_sets: Iterable[dict[int, float]]) -> tuple[Optional[float], int]:
    """The pooled standard deviation of per-seed gains over several arms, and its degrees of freedom."""
    ss, df = 0.0, 0
    for gains in gain_sets:
        vals = list(gains.values())
        if len(vals) >= 2:
            mean = sum(vals) / len(vals)
            ss += sum((v - mean) ** 2 for v in vals)
            df += len(vals) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def spread_from_other_studies(records_by_study: dict[str, list[TrialRecord]], metric: str,
                              profile: str) -> tuple[Optional[float], int, list[str]]:
    """Paired spread from earlier studies of the same profile and metric: every pair of arms, seed by seed.

    Why every pair: the per-seed difference between two arms of one study has the paired noise of the
    base whatever the arms' effect (a constant per pair), so any pair of arms estimates σ_d.
    """
    gain_sets, studies = [], []
    for study, records in sorted(records_by_study.items()):
        by_arm: dict[str, dict[int, float]] = {}
        for r in records:
            if (r.status == COMPLETE and r.metric_name == metric and r.windowed_metric is not None
                    and (r.config or {}).get("profile") == profile):
                by_arm.setdefault(r.arm, {})[r.seed] = r.windowed_metric
        names = sorted(by_arm)
        found = False
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = sorted(set(by_arm[a]) & set(by_arm[b]))
                if len(shared) >= 2:
                    gain_sets.append({s: by_arm[a][s] - by_arm[b][s] for s in shared})
                    found = True
        if found:
            studies.append(study)
    sd, df = pooled_spread(gain_sets)
    return sd, df, studies
