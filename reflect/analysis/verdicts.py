"""Verdicts of an ablation from its trial records: paired seeds, planned looks, Holm across arms.

``analyze(ablation, records)`` replays the seed design on what the store holds, look by look, exactly as
the engine takes it: a look is taken when every trial it needs (the undecided arms' and the baseline's
first ``n_k`` seeds) has finished; at a look each undecided arm is tested in three families —
``better`` (H0 gain ≤ +margin), ``worse`` (H0 gain ≥ −margin), ``equivalent`` (TOST, H0 |gain| ≥ margin) —
against the look's group-sequential boundary at the arm's Holm level. Holm across the arms is the
sequentially rejective procedure for group-sequential designs (Maurer & Bretz 2013): within a family
each of the ``m`` arms starts at α/m, and every rejection passes its share on, α/(m − r) for the rest,
re-testing at the same look. A decided arm stops getting seeds; the analysis stops at ``max``.

The interval shown with a verdict is the one at the level its test used, so the two never disagree.
An arm that failed on more seeds than its baseline is never called better or equivalent on its survivors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
from statsmodels.stats.multitest import multipletests

from reflect.ablation.spec import Ablation
from reflect.ablation.store import COMPLETE, TrialRecord
from reflect.analysis.convergence import Convergence, window_trend
from reflect.analysis.design import boundaries
from reflect.analysis.frames import FrameSummary, compare_frames
from reflect.analysis.hypothesis import FAMILIES, LookTest, family_test, interval
from reflect.analysis.sequential import replay
from reflect.analysis.inputs import ArmRecords, Exclusion, gather, paired_gains, pooled_spread
from reflect.analysis.power import minimum_detectable_effect

# Paired spread assumed for a PSNR metric before any paired seeds are measured: an A/A on the quick profile
# (3 seeds; the null change one more Gaussian, which redraws the random stream): Δ = −0.025 dB, 95% CI
# [−0.27, +0.22], i.e. σ_d ≈ 0.10 dB. Studies measure their own (the example studies in reports/examples/: 0.025
# to 0.42 dB, film_vs_concat the widest), and an observed spread, or an earlier study's (``prior``), replaces this.
DEFAULT_PSNR_SPREAD_DB = 0.10
DEFAULT_PSNR_SPREAD_SOURCE = (f"assumption: {DEFAULT_PSNR_SPREAD_DB} dB, the paired spread of an A/A on the quick "
                              "profile (3 seeds, one more Gaussian as the null change); no paired seeds measured yet")


@dataclass(frozen=True)
class Spread:
    """The paired per-seed spread σ_d used for power, and where it comes from."""

    sd: Optional[float]
    df: int
    source: str  # "observed", "earlier studies: …", "assumption: …", or "unknown"


@dataclass(frozen=True)
class MdeRow:
    seeds: int
    level: float
    mde: Optional[float]


@dataclass(frozen=True)
class FailureCount:
    failed: int
    finished: int
    baseline_failed: int
    flag: Optional[str]  # why the arm is not judged on its survivors, else None


@dataclass(frozen=True)
class LiteratureCheck:
    expected: float
    measured: float
    interval: tuple[float, float]
    outcome: str  # consistent | below | above
    source: str


@dataclass(frozen=True)
class TrialRef:
    key: str
    seed: int
    status: str
    value: Optional[float]
    failure_reason: Optional[str]
    wandb_error: Optional[str]
    code_version: Optional[str]


@dataclass
class ArmAnalysis:
    """One arm: its values, paired comparison with the baseline, verdict and the evidence behind it.

    ``delta``/``delta_ci`` are arm − baseline in the metric's unit (raw sign); ``verdict`` reads the gain,
    i.e. the sign flipped for metrics where lower is better.
    """

    name: str
    is_baseline: bool
    values: dict[int, float]
    mean: Optional[float] = None
    ci: Optional[tuple[float, float]] = None
    seeds_used: tuple[int, ...] = ()
    delta: Optional[float] = None
    delta_ci: Optional[tuple[float, float]] = None
    interval_confidence: Optional[float] = None
    verdict: str = "inconclusive"
    decided: bool = False
    decided_at: Optional[int] = None  # the seed count of the deciding look
    next_seeds: Optional[int] = None
    tests: dict[str, LookTest] = field(default_factory=dict)
    holm_p: dict[str, float] = field(default_factory=dict)  # fixed designs: statsmodels' Holm-adjusted p
    failures: Optional[FailureCount] = None
    mde: list[MdeRow] = field(default_factory=list)
    underpowered: bool = False
    literature: Optional[LiteratureCheck] = None
    convergence: Optional[Convergence] = None
    frames: Optional[FrameSummary] = None
    trials: list[TrialRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    looks: list[dict] = field(default_factory=list)  # per look taken: seeds, level, gain interval, verdict


@dataclass
class AblationAnalysis:
    """Everything a report, a gate or the engine needs to know about an ablation's state."""

    ablation: str
    alpha: float
    margin: float
    sign: float
    looks: tuple[int, ...]
    seeds: tuple[int, ...]
    sequential: bool
    boundaries: tuple[float, ...]  # at the first Holm step, α/m per side
    looks_taken: int  # looks whose trials had all finished
    arms: dict[str, ArmAnalysis]
    spread: Spread
    exclusions: list[Exclusion]
    notes: list[str]
    finished: bool  # every arm decided or the last look taken: nothing more to run

    def trials_to_run(self) -> dict[str, tuple[int, ...]]:
        """Arm → the seeds the next look needs (undecided arms and the baseline); empty when finished."""
        wanted = {n: a.next_seeds for n, a in self.arms.items() if not a.is_baseline and a.next_seeds}
        if not wanted:
            return {}
        count = max(wanted.values())
        out = {name: self.seeds[:count] for name in wanted}
        baseline = next(n for n, a in self.arms.items() if a.is_baseline)
        out[baseline] = self.seeds[:count]
        return out


def _mean_ci(values: list[float], confidence: float) -> tuple[Optional[float], Optional[tuple[float, float]]]:
    if not values:
        return None, None
    mean = float(np.mean(values))
    ci = interval(values, (1 - confidence) / 2)
    return mean, ci


def _to_delta(ci: Optional[tuple[float, float]], sign: float) -> Optional[tuple[float, float]]:
    if ci is None:
        return None
    lo, hi = sign * ci[0], sign * ci[1]
    return (min(lo, hi), max(lo, hi))


def estimate_spread(ablation: Ablation, gathered_arms: dict[str, ArmRecords], sign: float,
                    prior: Optional[Spread]) -> Spread:
    """Observed pooled paired spread, else an earlier study's (``prior``), else the stated default."""
    base = gathered_arms[ablation.baseline]
    sets = [paired_gains(a, base, sorted(a.values), sign) for n, a in gathered_arms.items() if n != ablation.baseline]
    sd, df = pooled_spread(sets)
    if sd is not None:
        return Spread(sd, df, "observed")
    if prior is not None and prior.sd is not None:
        return prior
    if ablation.metric.kind == "psnr":
        return Spread(DEFAULT_PSNR_SPREAD_DB, 0, DEFAULT_PSNR_SPREAD_SOURCE)
    return Spread(None, 0, "unknown: no paired seeds measured yet and no default for this metric")


def analyze(ablation: Ablation, records: Iterable[TrialRecord], prior_spread: Optional[Spread] = None) -> AblationAnalysis:
    """Replay the ablation's seed design on ``records`` and decide every arm.

    Args:
        ablation: the loaded ablation file (its design, metric, margin, confidence).
        records: trial records (any study's; only the current plan's are used).
        prior_spread: the paired spread from earlier studies, used for power until this one measures its own.

    Returns:
        The typed analysis: per arm its verdict, tests (p-values and levels), interval, failures, power,
        literature check, convergence and frame description; the design and what the engine runs next.
    """
    design, alpha, margin = ablation.design, ablation.decision.alpha, ablation.margin
    sign = 1.0 if ablation.metric.mode == "max" else -1.0
    gathered = gather(ablation, records)
    base = gathered.arms[ablation.baseline]
    others = [n for n in ablation.arms if n != ablation.baseline]
    m = max(1, len(others))
    looks = design.looks
    arms = {n: ArmAnalysis(n, n == ablation.baseline, dict(gathered.arms[n].values)) for n in ablation.arms}
    per_arm_gains = {a: paired_gains(gathered.arms[a], base, design.seeds, sign) for a in others}

    def look_ready(k: int, undecided_arms: list[str]) -> bool:
        return all(gathered.arms[a].terminal(s) for a in [*undecided_arms, ablation.baseline]
                   for s in design.seeds[:looks[k]])

    def may_accept(arm: str, family: str, k: int) -> bool:
        seeds_k = design.seeds[:looks[k]]
        return family == "worse" or gathered.arms[arm].failed(seeds_k) <= base.failed(seeds_k)

    decisions, looks_taken = replay(per_arm_gains, design.seeds, looks, alpha, margin, look_ready, may_accept)
    for name, d in decisions.items():
        arm = arms[name]
        arm.verdict, arm.decided, arm.decided_at, arm.next_seeds = d.verdict, d.decided, d.decided_at, d.next_seeds
        arm.tests, arm.seeds_used, arm.looks = d.tests, d.seeds_used, d.looks
        arm.interval_confidence = 1 - 2 * d.level if d.level is not None else None
    undecided = [a for a in others if not arms[a].decided]
    notes: list[str] = []
    finished = not undecided or looks_taken == len(looks)
    if looks_taken == 0:
        notes.append(f"the first look ({looks[0]} seeds per arm) has not been reached: the numbers below are "
                     "interim, on the seeds finished so far; no verdict is taken before a planned look")
    elif not finished:
        notes.append(f"look {looks_taken} of {len(looks)} taken ({looks[looks_taken - 1]} seeds); undecided arms "
                     f"continue to {looks[looks_taken]} seeds")

    for name in ablation.arms:
        _fill_arm(ablation, arms[name], gathered.arms, sign, margin, alpha, m, looks_taken)
    spread = estimate_spread(ablation, gathered.arms, sign, prior_spread)
    first_levels = boundaries(looks, alpha / m)
    for name in others:
        arm = arms[name]
        arm.mde = [MdeRow(n, lv, minimum_detectable_effect(spread.sd, n, lv, margin) if spread.sd is not None else None)
                   for n, lv in zip(looks, first_levels)]
        expected = ablation.expected.gain_db
        if expected is not None and ablation.metric.kind == "psnr" and arm.mde[-1].mde is not None:
            arm.underpowered = abs(expected) < arm.mde[-1].mde
    if not design.sequential:
        _holm_adjust(arms, others)
    if ablation.seeds_from_command_line and ablation.file_design.sequential:
        notes.append(f"--seeds replaced the file's {ablation.file_design.describe()} with a fixed design of "
                     f"{design.max_seeds} seeds: if earlier results of these arms were looked at, the stated error "
                     "rate no longer holds")
    return AblationAnalysis(
        ablation=ablation.name, alpha=alpha, margin=margin, sign=sign, looks=looks, seeds=design.seeds,
        sequential=design.sequential, boundaries=first_levels, looks_taken=looks_taken, arms=arms, spread=spread,
        exclusions=gathered.exclusions, notes=notes, finished=finished)


def _fill_arm(ablation: Ablation, arm: ArmAnalysis, gathered: dict[str, ArmRecords], sign: float, margin: float,
              alpha: float, m: int, looks_taken: int) -> None:
    """Means, the interval matching the verdict, failures, design-left seeds, literature, trend, frames, trials."""
    records, base = gathered[arm.name], gathered[ablation.baseline]
    conf = ablation.decision.confidence
    # the value each trial contributes under today's window (excluded trials: their stored one, for reference)
    arm.trials = [TrialRef(r.key, s, r.status, records.values.get(s, r.windowed_metric), r.failure_reason,
                           r.wandb_error, r.code_version) for s, r in sorted(records.records.items())]
    if arm.is_baseline:
        arm.mean, arm.ci = _mean_ci(list(arm.values.values()), conf)
        arm.verdict, arm.delta = "baseline", 0.0
        done = [r for r in records.records.values() if r.status == COMPLETE and r.seed in arm.values]
        arm.convergence = window_trend(done, ablation.metric.name, ablation.metric.window, sign, margin)
        arm.failures = FailureCount(records.failed(records.records), sum(1 for s in records.records if records.terminal(s)),
                                    records.failed(records.records), None)
        _note_trend(arm)
        return
    design = ablation.design
    if not arm.seeds_used:  # no look taken yet: interim numbers on what is finished, no verdict
        arm.seeds_used = tuple(s for s in design.seeds if s in arm.values and s in base.values)
    analysed = list(arm.seeds_used)
    # Seeds outside the design (run by hand with --seeds): used only once the planned looks are over, and
    # flagged, since looking again after the design ended is what inflates the error.
    extra = sorted(s for s in arm.values if s in base.values and s not in design.seeds)
    extra_failed = [s for s in records.records if s not in design.seeds and records.terminal(s)
                    and s not in arm.values]
    if extra and not (arm.decided or looks_taken == len(design.looks)):
        arm.notes.append(f"seeds {extra} outside the design ({design.describe()}) are set aside until its planned "
                         "looks are taken")
        extra = []
    if extra:
        analysed = sorted({*analysed, *extra})
        level = boundaries(design.looks, alpha / m)[-1]
        gains_all = list(paired_gains(records, base, analysed, sign).values())
        arm.tests = {f: family_test(f, gains_all, margin, level) for f in FAMILIES}
        seen = [*analysed, *extra_failed]
        more_failures = records.failed(seen) > base.failed(seen)
        hit = next((f for f in FAMILIES if arm.tests[f].rejected and (f == "worse" or not more_failures)), None)
        arm.verdict, arm.decided = (hit or "inconclusive"), hit is not None
        arm.decided_at = len(analysed) if hit else None
        arm.interval_confidence = 1 - 2 * level
        arm.seeds_used = tuple(analysed)
        arm.next_seeds = None
        arm.notes.append(f"design left: seeds {extra} were added beyond the planned looks ({design.describe()}); "
                         "the verdict uses every paired seed at the last look's level, and the design's error "
                         f"guarantee (α = {alpha:g} per side over the planned looks) no longer holds")
    arm.mean, arm.ci = _mean_ci([arm.values[s] for s in analysed if s in arm.values], conf)
    gains = paired_gains(records, base, analysed, sign)
    if gains:
        arm.delta = sign * float(np.mean(list(gains.values())))
    if arm.interval_confidence is None:  # not tested yet: the first look's interval
        arm.interval_confidence = 1 - 2 * boundaries(design.looks, alpha / m)[0]
    gain_ci = interval(list(gains.values()), (1 - arm.interval_confidence) / 2) if len(gains) >= 2 else None
    arm.delta_ci = _to_delta(gain_ci, sign)
    if arm.decided_at:
        seeds_seen = list(design.seeds[:arm.decided_at])
    elif looks_taken:
        seeds_seen = list(design.seeds[:design.looks[looks_taken - 1]])
    else:
        seeds_seen = [s for s in design.seeds if records.terminal(s) and base.terminal(s)]
    if extra:
        seeds_seen = [*arm.seeds_used, *extra_failed]
    failed, base_failed = records.failed(seeds_seen), base.failed(seeds_seen)
    flag = None
    if failed > base_failed:
        flag = (f"failed on {failed} of {len(seeds_seen)} seeds vs the baseline's {base_failed}: not judged better "
                "or equivalent on its surviving seeds")
        arm.notes.append(flag)
    arm.failures = FailureCount(failed, sum(1 for s in seeds_seen if records.terminal(s)), base_failed, flag)
    if ablation.expected.gain_db is not None and gain_ci is not None and ablation.metric.kind == "psnr":
        expected = float(ablation.expected.gain_db)
        lo, hi = gain_ci
        outcome = "consistent" if lo <= expected <= hi else ("below" if hi < expected else "above")
        arm.literature = LiteratureCheck(expected, sign * float(np.mean(list(gains.values()))), gain_ci, outcome,
                                         ablation.expected.source)
    complete = lambda recs: [recs.records[s] for s in analysed if s in recs.records and recs.records[s].status == COMPLETE]  # noqa: E731
    arm.convergence = window_trend(complete(records), ablation.metric.name, ablation.metric.window, sign, margin)
    _note_trend(arm)
    arm.frames = compare_frames(records.records, base.records, analysed, ablation.metric.name,
                                ablation.metric.window, sign)


def _note_trend(arm: ArmAnalysis) -> None:
    if arm.convergence is not None and arm.convergence.still_improving:
        arm.notes.append(f"still improving over its window ({arm.convergence.rise:+.3g} from step "
                         f"{arm.convergence.steps[0]} to {arm.convergence.steps[1]}, p = {arm.convergence.p_value:.2g}): "
                         "the windowed mean compares learning speed as much as final quality; longer training "
                         "could change the verdict")


def _holm_adjust(arms: dict[str, ArmAnalysis], others: list[str]) -> None:
    """Fixed design: Holm-adjusted p-values per family (statsmodels), reported beside the nominal ones."""
    tested = [a for a in others if arms[a].tests]
    for family in FAMILIES:
        if not tested:
            return
        p = [arms[a].tests[family].p_value for a in tested]
        adjusted = multipletests(p, method="holm")[1]
        for a, value in zip(tested, adjusted):
            arms[a].holm_p[family] = float(value)
