"""``summary.json``: the analysis of an ablation as JSON (the edge where typed results become a file).

Keys kept from earlier versions: per arm ``n``, ``mean``, ``ci``, ``delta_db`` (arm − baseline in the
metric's unit), ``delta_ci``, ``verdict``, ``trials``; added per arm ``p_values``, ``mde``, ``failures``,
``next_seeds``, ``decided``, ``literature``, ``convergence``, ``frames``; the design (looks, boundaries)
at the top. The same store gives the same bytes, except ``generated_at``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any, Iterable

from reflect.ablation.spec import Ablation
from reflect.ablation.store import COMPLETE, TrialRecord
from reflect.analysis.inputs import current_records
from reflect.analysis.verdicts import AblationAnalysis, ArmAnalysis
from reflect.analysis.windows import windowed


def _round_trip(value: Any) -> Any:
    """Tuples → lists, recursively (what JSON will hold anyway), so a summary compares equal to its file;
    non-finite floats (the t statistic of a zero-spread sample) → None, since JSON has no infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _round_trip(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round_trip(v) for v in value]
    return value


def _arm_entry(arm: ArmAnalysis, analysis: AblationAnalysis, other: dict[str, Any],
               parameter_counts: dict[str, int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "n": len(arm.values) if arm.is_baseline else sum(1 for s in arm.seeds_used if s in arm.values),
        "mean": arm.mean, "ci": arm.ci,
        "delta_db": arm.delta,
        "delta_ci": arm.delta_ci,
        "interval_confidence": arm.interval_confidence,
        "verdict": arm.verdict,
    }
    if not arm.is_baseline:
        entry.update(
            n_paired=len(arm.seeds_used) if arm.delta is not None else 0,
            seeds_used=arm.seeds_used,
            decided=arm.decided, decided_at=arm.decided_at, next_seeds=arm.next_seeds,
            p_values={f: {"p": t.p_value, "level": t.level, "statistic": t.statistic, "df": t.df,
                          "rejected": t.rejected, **({"holm_p": arm.holm_p[f]} if f in arm.holm_p else {})}
                      for f, t in arm.tests.items()},
            mde=[asdict(row) for row in arm.mde],
            underpowered=arm.underpowered,
            literature=asdict(arm.literature) if arm.literature else None,
            frames=asdict(arm.frames) if arm.frames else None,
            looks=arm.looks,
        )
    entry.update(
        failures=asdict(arm.failures) if arm.failures else None,
        convergence=asdict(arm.convergence) if arm.convergence else None,
        notes=arm.notes,
        trials=[asdict(t) for t in arm.trials],
        other_metrics=other,
        parameter_counts=parameter_counts,
    )
    return entry


def other_metrics(ablation: Ablation, complete: list[TrialRecord], arm: str, seeds: Iterable[int]) -> dict[str, Any]:
    """Every other evaluated metric of an arm on the seeds its verdict used, windowed, with its paired Δ.

    Why: the decision rests on one metric, but a reader needs to see what else moved (masked PSNR, SSIM,
    LPIPS where available, region scores such as the synthetic head's wrinkles) before trusting it. No
    verdicts here: these numbers are context, not a second test.
    """
    seeds = set(seeds)
    window, primary = ablation.metric.window, ablation.metric.name
    chosen = [r for r in complete if r.seed in seeds]
    keys = sorted({k for r in chosen for h in r.eval_history for k, v in h.items()
                   if k not in ("step", primary) and isinstance(v, (int, float))})
    out: dict[str, Any] = {}
    for key in keys:
        per_seed = {a: {r.seed: windowed(r.eval_history, key, window) for r in chosen if r.arm == a}
                    for a in (arm, ablation.baseline)}
        mine = {s: v for s, v in per_seed[arm].items() if v is not None}
        base = {s: v for s, v in per_seed[ablation.baseline].items() if v is not None}
        if not mine:
            continue
        deltas = [mine[s] - base[s] for s in sorted(set(mine) & set(base))] if arm != ablation.baseline else []
        out[key] = {"n": len(mine), "mean": float(sum(mine.values()) / len(mine)),
                    "delta": float(sum(deltas) / len(deltas)) if deltas else None}
    return out


def _data_description(ablation: Ablation) -> str:
    """What the trials trained on, in words (a synthetic-head report must never read like a face capture's)."""
    cfg = ablation.arms[ablation.baseline].config
    if cfg.data.root is None and not cfg.data.sessions:
        return (f"the embedded synthetic head ({cfg.profile} profile, {cfg.data.synthetic.image_size} px), "
                "not a face capture")
    roots = [cfg.data.root] if cfg.data.root else [s.root for s in cfg.data.sessions]
    return f"capture {', '.join(map(str, roots))} ({cfg.profile} profile)"


def build_summary(ablation: Ablation, analysis: AblationAnalysis, records: list[TrialRecord]) -> dict[str, Any]:
    """The JSON-ready summary of ``analysis`` (plus context metrics and provenance from ``records``)."""
    used = current_records(ablation, records)
    complete = [r for r in used if r.status == COMPLETE]
    baseline_seeds = sorted({s for a in analysis.arms.values() if not a.is_baseline for s in a.seeds_used})
    arms = {}
    for name, arm in analysis.arms.items():
        seeds = baseline_seeds if arm.is_baseline else arm.seeds_used
        params = next((r.parameter_counts for r in used if r.arm == name and r.parameter_counts), {})
        arms[name] = _arm_entry(arm, analysis, other_metrics(ablation, complete, name, seeds), params)
    compared = [r for r in complete if r.seed in set(analysis.arms[r.arm].seeds_used or baseline_seeds)]
    summary = {
        "ablation": ablation.name, "phase": ablation.phase, "question": ablation.question,
        "citations": ablation.citations, "baseline": ablation.baseline,
        "metric": {"name": ablation.metric.name, "mode": ablation.metric.mode, "window": ablation.metric.window,
                   "unit": "dB" if ablation.metric.kind == "psnr" else ablation.metric.kind.upper()},
        "decision": {"margin": analysis.margin, "min_effect_db": analysis.margin if ablation.metric.kind == "psnr"
                     else None, "confidence": ablation.decision.confidence, "alpha_per_side": analysis.alpha},
        "design": {"sequential": analysis.sequential, "looks": analysis.looks, "seeds": analysis.seeds,
                   "boundaries": analysis.boundaries, "boundaries_at": f"alpha/{max(1, len(arms) - 1)} per side "
                   "(the first Holm step)", "looks_taken": analysis.looks_taken, "finished": analysis.finished,
                   "description": ablation.design.describe(),
                   "from_command_line": ablation.seeds_from_command_line},
        "spread": asdict(analysis.spread),
        "expected": {"gain_db": ablation.expected.gain_db, "source": ablation.expected.source},
        "seeds": ablation.seeds, "overrides": list(ablation.overrides), "arms": arms,
        "data": _data_description(ablation),
        "notes": analysis.notes,
        "exclusions": [asdict(e) for e in analysis.exclusions],
        "protocol": next((r.protocol for r in sorted(complete, key=lambda r: (r.arm != ablation.baseline, r.seed))),
                         {}),
        "provenance": next((r.provenance for r in complete), {}),
        # Trials are identified by config and seed, not by code version, so a rerun after a code change
        # reuses older trials: every commit the compared numbers came from is listed (and warned about).
        "code_versions": sorted({v for r in compared for v in r.code_versions}),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return _round_trip(summary)
