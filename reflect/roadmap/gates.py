"""Gates decided on intervals: each condition holds, fails, is undecided, or is incomplete (data missing).

A threshold condition on a metric reads the best configuration's interval over its seeds (95%, two-sided):
``>=``/``>`` holds when the lower bound clears the threshold and fails when the upper bound is below it;
``<``/``<=`` mirror that; ``between`` holds when the interval lies inside the range and fails when it lies
outside. Otherwise it is undecided, with the probability that the threshold is met (the t confidence
distribution of the mean) and the seeds that would settle it at the observed spread.

A gate holds when all its conditions hold, fails when one fails, else is incomplete (something is missing:
a sign-off, a latency record, a metric nobody evaluated) or undecided. A phase's outcome is the first of
its gates, in the roadmap's order, that holds; else ``incomplete`` or ``undecided``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from scipy import stats as sps

from reflect.roadmap.fleet import Estimate, TrialGroup, best_group
from reflect.roadmap.signoffs import Signoff, active_signoff
from reflect.roadmap.spec import (ComparisonCondition, Condition, DecisionCondition, Gate, LatencyCondition,
                                  MetricCondition, Phase, SignoffCondition)

HOLDS, FAILS, UNDECIDED, INCOMPLETE = "holds", "fails", "undecided", "incomplete"
MAX_SEEDS_FORECAST = 50


@dataclass(frozen=True)
class ConditionResult:
    """Attributes:
        kind: metric | latency | comparison | decision | signoff.
        description: the condition in words.
        state: holds | fails | undecided | incomplete.
        detail: what it was decided on (or what is missing).
        group: the trial group it read, if any.
        value / interval: the estimate it read.
        probability: for an undecided threshold, the probability the condition is met.
        seeds_to_settle: for an undecided threshold, the seeds the observed spread needs to decide it.
    """

    kind: str
    description: str
    state: str
    detail: str
    group: Optional[str] = None
    value: Optional[float] = None
    interval: Optional[tuple[float, float]] = None
    probability: Optional[float] = None
    seeds_to_settle: Optional[int] = None


@dataclass(frozen=True)
class GateResult:
    gate: str
    text: str
    state: str
    conditions: tuple[ConditionResult, ...]
    passes_phase: bool
    source: str = "ROADMAP_V3"


@dataclass
class GateContext:
    """What the gates read: the fleet, sign-offs, latency records and the decisions' verdicts."""

    groups: Sequence[TrialGroup]
    signoffs: Sequence[Signoff]
    latency: Sequence[dict]
    decisions: dict[str, Any] = field(default_factory=dict)  # decision id → DecisionStatus (state, settled, verdicts)
    confidence: float = 0.95


def _met_probability(est: Estimate, threshold: float, above: bool) -> Optional[float]:
    if est.sd is None or est.n < 2:
        return None
    if est.sd == 0:
        return 1.0 if (est.mean >= threshold) == above else 0.0
    z = (est.mean - threshold) / (est.sd / math.sqrt(est.n))
    p = float(sps.t.cdf(z, est.n - 1))
    return p if above else 1 - p


def _seeds_to_settle(est: Estimate, threshold: float, confidence: float) -> Optional[int]:
    """The seed count whose interval half-width at the observed spread is below |mean − threshold|."""
    if est.sd is None or est.sd == 0:
        return None
    gap = abs(est.mean - threshold)
    for n in range(max(2, est.n), MAX_SEEDS_FORECAST + 1):
        if float(sps.t.isf((1 - confidence) / 2, n - 1)) * est.sd / math.sqrt(n) < gap:
            return n
    return None


def _metric(c: MetricCondition, ctx: GateContext) -> ConditionResult:
    mode = "min" if c.metric.endswith("lpips") else "max"
    est = best_group(ctx.groups, c.metric, c.window, mode, ctx.confidence)
    if est is None:
        return ConditionResult("metric", c.describe(), INCOMPLETE, f"no complete trial evaluated {c.metric}"
                               + (" (LPIPS needs its backbone weights)" if "lpips" in c.metric else ""))
    evaluations = est.group.evaluations(c.metric)
    short = est.window_used < c.window
    own = est.window_used != min(c.window, evaluations)
    window_note = "" if not short else (f"; avg{est.window_used} ({'its ablation' if own else 'every evaluation'}"
                                        f"'s window): its trials made only {evaluations} evaluations, fewer than "
                                        f"the gate's {c.window}, so the condition can fail but not hold")
    synthetic = " (synthetic head)" if est.group.synthetic else ""
    where = f"best: {est.group.label}{synthetic}, {est.mean:.3f} over {est.n} seed(s){window_note}"
    base = dict(kind="metric", description=c.describe(), group=est.group.label, value=est.mean, interval=est.interval)
    if est.interval is None:
        return ConditionResult(state=UNDECIDED, detail=where + "; one seed gives no interval", **base)
    lo, hi = est.interval
    where += f", {ctx.confidence:.0%} interval [{lo:.3f}, {hi:.3f}]"
    result = _threshold(c, est, lo, hi, where, base, ctx)
    if short and result.state == HOLDS:  # less data than the gate asks for never passes it
        return ConditionResult(**{**result.__dict__, "state": UNDECIDED})
    return result


def _threshold(c: MetricCondition, est: Estimate, lo: float, hi: float, where: str, base: dict,
               ctx: GateContext) -> ConditionResult:
    if c.comparator == "between":
        low, high = c.range
        if low <= lo and hi < high:
            return ConditionResult(state=HOLDS, detail=where, **base)
        if hi < low or lo >= high:
            return ConditionResult(state=FAILS, detail=where, **base)
        p_in = (_met_probability(est, low, True) or 0.0) - (_met_probability(est, high, True) or 0.0)
        edge = low if abs(est.mean - low) < abs(est.mean - high) else high
        return ConditionResult(state=UNDECIDED, detail=where, probability=max(0.0, p_in),
                               seeds_to_settle=_seeds_to_settle(est, edge, ctx.confidence), **base)
    above = c.comparator in (">=", ">")
    t = c.threshold
    holds = (lo >= t if c.comparator == ">=" else lo > t) if above else (hi <= t if c.comparator == "<=" else hi < t)
    fails = (hi < t if c.comparator == ">=" else hi <= t) if above else (lo > t if c.comparator == "<=" else lo >= t)
    if holds:
        return ConditionResult(state=HOLDS, detail=where, **base)
    if fails:
        return ConditionResult(state=FAILS, detail=where, **base)
    return ConditionResult(state=UNDECIDED, detail=where, probability=_met_probability(est, t, above),
                           seeds_to_settle=_seeds_to_settle(est, t, ctx.confidence), **base)


def _latency(c: LatencyCondition, ctx: GateContext) -> ConditionResult:
    rows = [r for r in ctx.latency if r.get("output") == c.output]
    gpu = [r for r in rows if str(r.get("device_type")) == "cuda" and isinstance(r.get("total_ms"), (int, float))
           and math.isfinite(r["total_ms"]) and int(r.get("gaussians") or 0) >= c.min_gaussians]
    base = dict(kind="latency", description=c.describe())
    if not gpu:
        seen = sorted({str(r.get("device")) for r in rows}) or ["none"]
        return ConditionResult(state=INCOMPLETE, detail=f"no {c.output} latency recorded on a GPU with at least "
                               f"{c.min_gaussians} Gaussians (recorded on: {', '.join(seen)}); run "
                               "benches/bench_latency.py on the target GPU", **base)
    best = min(gpu, key=lambda r: r["total_ms"])
    ok = best["total_ms"] < c.threshold_ms if c.comparator == "<" else best["total_ms"] <= c.threshold_ms
    return ConditionResult(state=HOLDS if ok else FAILS, value=float(best["total_ms"]),
                           detail=f"fastest: {best.get('config')} on {best.get('device')}: {best['total_ms']:.2f} ms",
                           **base)


def _comparison(c: ComparisonCondition, ctx: GateContext) -> ConditionResult:
    """The best configuration (by ``against``) among those that evaluated both metrics: per seed, windowed
    ``metric`` − ``against``; its interval must lie within ±margin (holds) or outside it (fails).

    Why only those: most configurations never evaluate the compared metric (the mirror view is scored by the
    ablations that ask for it); the best of all by ``against`` would leave the condition without a value.
    """
    base = dict(kind="comparison", description=c.describe())
    both = [g for g in ctx.groups if g.values(c.metric, 20) and g.values(c.against, 20)]
    if not both:
        hint = ("; a capture has no ground truth at the mirror viewpoint: render it with python -m reflect.mirror "
                "and judge it by the sign-off") if c.metric.startswith("mirror/") else ""
        return ConditionResult(state=INCOMPLETE, detail=f"no configuration evaluated {c.metric} beside "
                               f"{c.against}{hint}", **base)
    est = best_group(both, c.against, 20, "max", ctx.confidence)
    if est is None:
        return ConditionResult(state=INCOMPLETE, detail=f"no trial evaluated {c.against}", **base)
    window = est.group.effective_window(c.against, 20)
    mine, theirs = est.group.values(c.metric, window), est.group.values(c.against, window)
    gaps = [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]
    if not gaps:
        return ConditionResult(state=INCOMPLETE, detail=f"the best configuration ({est.group.label}) has no "
                               f"{c.metric} evaluation beside {c.against}", group=est.group.label, **base)
    mean = sum(gaps) / len(gaps)
    if len(gaps) < 2:
        return ConditionResult(state=UNDECIDED, detail=f"{est.group.label}: gap {mean:+.3f} on one seed",
                               group=est.group.label, value=mean, **base)
    sd = float(np.std(gaps, ddof=1))
    half = float(sps.t.isf((1 - ctx.confidence) / 2, len(gaps) - 1)) * sd / math.sqrt(len(gaps))
    lo, hi = mean - half, mean + half
    state = HOLDS if -c.margin < lo and hi < c.margin else (FAILS if hi < -c.margin or lo > c.margin else UNDECIDED)
    return ConditionResult(state=state, detail=f"{est.group.label}: gap {mean:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] "
                           f"over {len(gaps)} seeds", group=est.group.label, value=mean, interval=(lo, hi), **base)


def _decision(c: DecisionCondition, ctx: GateContext) -> ConditionResult:
    base = dict(kind="decision", description=c.describe())
    state = ctx.decisions.get(c.decision)
    if state is None or not state.verdicts or state.state in ("not written", "not run"):
        why = "is not written yet" if state is not None and state.state == "not written" else "has no trials yet"
        return ConditionResult(state=INCOMPLETE, detail=f"decision {c.decision} {why}", **base)
    detail = ", ".join(f"{a}: {v}" for a, v in state.verdicts.items())
    if any(v == c.verdict for v in state.verdicts.values()):
        return ConditionResult(state=HOLDS, detail=detail, **base)
    return ConditionResult(state=FAILS if state.settled else UNDECIDED, detail=detail + ("" if state.settled else
                           "; its design has looks left"), **base)


def _signoff(c: SignoffCondition, phase: int, ctx: GateContext) -> ConditionResult:
    base = dict(kind="signoff", description=c.describe())
    s = active_signoff(ctx.signoffs, phase, c.check)
    if s is None:
        return ConditionResult(state=INCOMPLETE, detail=f"sign-off {c.check!r} not recorded (python -m reflect.signoff "
                               f"{phase} {c.check} --by NAME --note ...)", **base)
    detail = f"signed off by {s.by} at {s.at}: {s.note}"
    best = best_group(ctx.groups, "val/psnr", 20, "max", ctx.confidence)
    if best is not None and s.trials and not {r.key for r in best.group.records} & set(s.trials):
        detail += f" (note: it looked at other trials than today's best configuration, {best.group.label})"
    return ConditionResult(state=HOLDS, detail=detail, **base)


def evaluate_condition(c: Condition, phase: int, ctx: GateContext) -> ConditionResult:
    if isinstance(c, MetricCondition):
        return _metric(c, ctx)
    if isinstance(c, LatencyCondition):
        return _latency(c, ctx)
    if isinstance(c, ComparisonCondition):
        return _comparison(c, ctx)
    if isinstance(c, DecisionCondition):
        return _decision(c, ctx)
    return _signoff(c, phase, ctx)


def evaluate_gate(gate: Gate, phase: int, ctx: GateContext) -> GateResult:
    """Decide one gate from its conditions.

    Args:
        gate: the gate, as roadmap.yaml states it.
        phase: its phase's number.
        ctx: what the conditions are judged on (fleet estimates, decisions, sign-offs, latencies, confidence).
    Returns:
        The GateResult: holds when every condition holds; else fails if one fails; else incomplete if one lacks
        data; else undecided. Each condition's own result is kept.
    """
    results = tuple(evaluate_condition(c, phase, ctx) for c in gate.conditions)
    states = {r.state for r in results}
    if states == {HOLDS}:
        state = HOLDS
    elif FAILS in states:
        state = FAILS
    elif INCOMPLETE in states:
        state = INCOMPLETE
    else:
        state = UNDECIDED
    return GateResult(gate.name, gate.text, state, results, gate.next_phase is not None, gate.source)


def phase_outcome(phase: Phase, gates: Sequence[GateResult]) -> tuple[str, bool, list[str]]:
    """(outcome, passed, what is missing): the first gate that holds, else incomplete/undecided."""
    missing = [f"{g.gate}: {c.detail}" for g in gates for c in g.conditions if c.state == INCOMPLETE]
    held = next((g for g in gates if g.state == HOLDS), None)
    if held is not None:
        return held.gate, held.passes_phase, missing
    if not gates:
        return "no gates", False, missing
    if any(g.state == INCOMPLETE for g in gates):
        return INCOMPLETE, False, missing
    if any(g.state == UNDECIDED for g in gates):
        return UNDECIDED, False, missing
    return "no gate holds", False, missing
