"""Where the project stands on its roadmap: gates per phase, the current phase, progress, best results,
and a forecast of the compute still needed to settle each open decision.

The rules (documented in the README and tested on the roadmap file's own header case):

- **Passed**: a phase is passed when one of its phase-passing gates (``GO``/``SHIP``, those with a
  ``next_phase``) holds — every condition, sign-offs included, decided on intervals.
- **Current phase**: the first phase, in order, that is not passed. The best number alone never moves the
  project: 37.99 dB with Phase 2's sign-off missing is still Phase 2, although it is above Phase 3's target.
- **Progress**: ``(phases passed + the current phase's share of settled decisions) / phases``. A decision
  is settled when its ablation has finished its design (every arm decided, or its last look taken) or its
  sweep has run all its trials. One phase passed of six and half of Phase 2's decisions settled reads
  "1/6 phases · 25%".
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from reflect.ablation.store import COMPLETE, FAILED, INTERRUPTED, PRUNED, RUNNING, ResultsStore
from reflect.roadmap.fleet import TrialGroup, best_group, latency_records, load_fleet
from reflect.roadmap.gates import GateContext, GateResult, evaluate_gate, phase_outcome
from reflect.roadmap.signoffs import now_iso, read_signoffs
from reflect.roadmap.spec import Decision, Roadmap

# The sweep's own budget rule (reflect.ablation.sweep_worker.worker, its ``spent()``): trials complete, pruned,
# failed or running count, so a failed trial uses its slot and the sweep runs no replacement; a dead worker's trial
# that is re-queued counts once (its copy keeps the trial's name, so the store holds one record for both). A trial
# stopped by a signal (interrupted in the store) was never told to Optuna: it stays RUNNING there (or is re-queued)
# and keeps its slot. Replicated on the store's records rather than imported: the rule is a closure inside the
# sweep's worker loop.
SWEEP_BUDGET_STATES = (COMPLETE, PRUNED, FAILED, RUNNING, INTERRUPTED)
SWEEP_FINISHED_STATES = (COMPLETE, PRUNED, FAILED)

BEST_METRICS = (("psnr", "val/psnr", "max"), ("ssim", "val/ssim", "max"), ("lpips", "val/lpips", "min"))
BEST_WINDOW = 20


@dataclass(frozen=True)
class Forecast:
    """Trials still needed to settle a decision, and what they cost per device kind at the store's measured
    mean trial time on that kind (``trial_s``: device → seconds)."""

    trials: int
    trial_s: dict[str, float]
    basis: str

    @property
    def trial_hours(self) -> dict[str, float]:
        return {device: self.trials * seconds / 3600 for device, seconds in self.trial_s.items()}


@dataclass
class DecisionStatus:
    id: str
    claim: str
    file: str
    kind: str  # ablation | sweep
    state: str  # not written | not run | running | settled
    settled: bool
    verdicts: dict[str, str] = field(default_factory=dict)
    detail: str = ""
    forecast: Optional[Forecast] = None


@dataclass
class PhaseStatus:
    phase: int
    title: str
    db_range: str
    outcome: str
    passed: bool
    gates: list[GateResult]
    decisions: list[DecisionStatus]
    missing: list[str]


@dataclass
class BestResult:
    metric: str
    value: Optional[float]
    trial: Optional[str]  # the trial group (study/arm)
    interval: Optional[tuple[float, float]]
    seeds: int
    synthetic: bool


@dataclass
class RoadmapStatus:
    roadmap: str
    current_phase: int
    passed: int
    total: int
    percent: float
    best: dict[str, BestResult]
    phases: list[PhaseStatus]
    updated: str
    groups: int
    synthetic_only: bool
    runs_dirs: list[str]
    resolutions: list[str] = field(default_factory=list)  # "WxH" the fleet's trials were evaluated at


def fleet_resolutions(groups: Sequence[TrialGroup]) -> list[str]:
    """The image sizes the fleet's complete trials ran at: each record's evaluation protocol (``resolution``,
    width x height), else its config's ``data.synthetic.image_size`` for a synthetic trial recorded without one."""
    sizes = set()
    for g in groups:
        for r in g.records:
            res = (r.protocol or {}).get("resolution")
            if isinstance(res, (list, tuple)) and len(res) == 2:
                sizes.add((int(res[0]), int(res[1])))
                continue
            size = (((r.config or {}).get("data") or {}).get("synthetic") or {}).get("image_size")
            if g.synthetic and isinstance(size, int) and not isinstance(size, bool):
                sizes.add((size, size))
    return [f"{w}x{h}" for w, h in sorted(sizes)]


def _trial_seconds(records) -> dict[str, float]:
    """Mean wall time of a complete trial, per device kind that ran one."""
    walls: dict[str, list[float]] = {}
    for r in records:
        if r.status == COMPLETE and r.wall_time_s:
            walls.setdefault((r.provenance or {}).get("device") or "unknown device", []).append(r.wall_time_s)
    return {device: statistics.mean(w) for device, w in sorted(walls.items())}


def _find_store(name: str, runs_dirs: Sequence[str | Path]) -> Optional[ResultsStore]:
    for runs in runs_dirs:
        store = ResultsStore(Path(runs) / name)
        if store.trials_dir.is_dir():
            return store
    return None


def decision_status(decision: Decision, runs_dirs: Sequence[str | Path],
                    fleet_seconds: Optional[dict[str, float]] = None) -> DecisionStatus:
    """The state of one decision: its file's analysis from the store, and a forecast of what is left.

    Args:
        decision: the roadmap decision.
        runs_dirs: where its study's store may be.
        fleet_seconds: device → mean trial seconds over the fleet, the cost estimate while the decision's own
            study has measured none (labelled as such in the forecast's basis).
    """
    def cost(records) -> tuple[dict[str, float], str]:
        own = _trial_seconds(records)
        if own or not fleet_seconds:
            return own, ""
        return dict(fleet_seconds), " (trial cost: the fleet's mean, none measured for this decision yet)"

    kind = "sweep" if decision.is_sweep else "ablation"
    rel = f"{decision.file.parent.name}/{decision.file.name}"
    if decision.planned:
        return DecisionStatus(decision.id, decision.claim, rel, kind, "not written", False,
                              detail=f"{rel} is not written yet")
    if decision.is_sweep:
        from reflect.ablation.sweep_spec import load_sweep

        spec, _ = load_sweep(decision.file)
        store = _find_store(spec.name, runs_dirs)
        records = list(store.records()) if store else []
        spent = sum(1 for r in records if r.status in SWEEP_BUDGET_STATES)
        finished = sum(1 for r in records if r.status in SWEEP_FINISHED_STATES)
        in_progress = spent - finished  # running or interrupted: in the budget, not finished
        left = max(0, spec.n_trials - spent) + in_progress
        settled = left == 0
        failed = sum(1 for r in records if r.status == FAILED)
        notes = [f"{failed} failed"] * bool(failed) + [f"{in_progress} running or interrupted"] * bool(in_progress)
        costs, note = cost(records)
        return DecisionStatus(decision.id, decision.claim, rel, kind,
                              "settled" if settled else ("not run" if not records else "running"), settled,
                              detail=f"{finished}/{spec.n_trials} sweep trials finished"
                                     + (f" ({', '.join(notes)})" if notes else ""),
                              forecast=None if settled else Forecast(
                                  left, costs, "sweep trials left (its budget counts complete, pruned, failed and "
                                  "running trials, as reflect.sweep does)" + note))
    from reflect.ablation.spec import load_ablation
    from reflect.analysis.inputs import TERMINAL, current_records
    from reflect.analysis.verdicts import analyze

    ablation = load_ablation(decision.file)
    store = _find_store(ablation.name, runs_dirs)
    records = list(store.records()) if store else []
    # Only today's plan counts (analyze reads the same records): trials of an older config hash stay in the store,
    # unused, and leave every trial of the current plan still to run.
    current = current_records(ablation, records)
    analysis = analyze(ablation, current)
    set_aside = len(records) - len(current)
    aside = (f"; {set_aside} record(s) of other configurations set aside (another version of the file, or a run "
             "with overrides or --profile: the page reads the file as it stands)") if set_aside else ""
    looks = f"{analysis.looks_taken}/{len(analysis.looks)} looks taken{aside}"
    verdicts = {n: a.verdict for n, a in analysis.arms.items() if not a.is_baseline} if current else {}
    if analysis.finished and current:
        return DecisionStatus(decision.id, decision.claim, rel, kind, "settled", True, verdicts, detail=looks)
    # Left to run: every undecided arm (and the baseline) to the seed count its observed MDE asks for, at most max.
    counts = {}
    for name, arm in analysis.arms.items():
        if arm.is_baseline or arm.decided:
            continue
        need = ablation.design.max_seeds
        if arm.delta is not None:
            need = next((row.seeds for row in arm.mde if row.mde is not None and row.mde <= abs(arm.delta)), need)
        counts[name] = need
    if counts:
        counts[ablation.baseline] = max(counts.values())
    # Done as the runner sees it: the design's first seeds whose current record is terminal (complete, failed or
    # pruned: a failed trial is not retried without --retry-failed).
    finished = {(r.arm, r.seed) for r in current if r.status in TERMINAL}
    left = sum(1 for n, need in counts.items() for s in ablation.design.seeds[:need] if (n, s) not in finished)
    basis = "seeds each undecided arm's MDE asks for (at most max), baseline included"
    costs, note = cost(records)
    return DecisionStatus(decision.id, decision.claim, rel, kind, "running" if records else "not run", False, verdicts,
                          detail=looks, forecast=Forecast(left, costs, basis + note))


def roadmap_status(roadmap: Roadmap, runs_dirs: Sequence[str | Path], groups: Optional[list[TrialGroup]] = None,
                   decisions: Optional[dict[str, DecisionStatus]] = None) -> RoadmapStatus:
    """Evaluate every phase's gates on the fleet and place the project on the roadmap.

    Args:
        roadmap: the loaded roadmap.
        runs_dirs: results-store roots (the fleet, sign-offs and recorded benchmarks are read from them).
        groups: the fleet, if already loaded (default: read from ``runs_dirs``).
        decisions: decision statuses by id, if already computed (default: computed from the files).
    """
    groups = load_fleet(runs_dirs) if groups is None else groups
    if decisions is None:
        fleet = _trial_seconds([r for g in groups for r in g.records])
        decisions = {d.id: decision_status(d, runs_dirs, fleet) for p in roadmap.phases for d in p.decisions}
    ctx = GateContext(groups, read_signoffs(runs_dirs), latency_records(runs_dirs), decisions)
    phases = []
    for phase in roadmap.phases:
        gates = [evaluate_gate(g, phase.phase, ctx) for g in phase.gates]
        outcome, passed, missing = phase_outcome(phase, gates)
        phases.append(PhaseStatus(phase.phase, phase.title, phase.db_range, outcome, passed, gates,
                                  [decisions[d.id] for d in phase.decisions], missing))
    passed = 0
    for p in phases:
        if not p.passed:
            break
        passed += 1
    current = min(passed + 1, len(phases))
    cur = phases[current - 1]
    share = (sum(d.settled for d in cur.decisions) / len(cur.decisions)) if cur.decisions and passed < len(phases) else 0
    total = len(phases)
    best = {}
    for key, metric, mode in BEST_METRICS:
        est = best_group(groups, metric, BEST_WINDOW, mode)
        best[key] = BestResult(metric, None if est is None else est.mean, None if est is None else est.group.label,
                               None if est is None else est.interval, 0 if est is None else est.n,
                               bool(est and est.group.synthetic))
    return RoadmapStatus(roadmap.name, current, passed, total, 100.0 * (passed + share) / total, best, phases, now_iso(),
                         len(groups), bool(groups) and all(g.synthetic for g in groups), [str(r) for r in runs_dirs],
                         fleet_resolutions(groups))
