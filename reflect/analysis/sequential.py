"""The replay of a seed design over paired gains: planned looks, group-sequential boundaries, Holm.

Pure and fast (no records, no I/O), so that the engine's verdicts and the simulation that checks their
error rates run the very same code. At each look every undecided arm is tested in three families —
``better`` (H0 gain ≤ +margin), ``worse`` (H0 gain ≥ −margin) and ``equivalent`` (TOST) — against the
look's boundary at the arm's Holm level. Holm across the arms is the sequentially rejective procedure for
group-sequential designs (Maurer & Bretz 2013, *Stat. Biopharm. Res.* 5:311): within a family each of the
``m`` arms starts at α/m; every rejection passes its share on (α/(m − r) for the rest), and the others are
re-tested at the same look. A decided arm stops; a family's level never counts an arm decided elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from reflect.analysis.design import boundaries
from reflect.analysis.hypothesis import FAMILIES, LookTest, family_test, interval


@dataclass
class ArmDecision:
    """Where one arm stands after the replay.

    Attributes:
        verdict: better | worse | equivalent | inconclusive.
        decided_at: the seed count of the deciding look (None while undecided).
        next_seeds: the seed count of the next look it needs (None when decided or after the last look).
        tests: the three tests at the last look it was tested at.
        seeds_used: the paired seeds of that look.
        level: the level of the verdict's test (decided), else the smallest of its families' levels.
    """

    verdict: str = "inconclusive"
    decided_at: Optional[int] = None
    next_seeds: Optional[int] = None
    tests: dict[str, LookTest] = field(default_factory=dict)
    seeds_used: tuple[int, ...] = ()
    level: Optional[float] = None
    looks: list[dict] = field(default_factory=list)  # per look taken: seeds, level, interval of the gain


    @property
    def decided(self) -> bool:
        return self.decided_at is not None


def replay(gains: Mapping[str, Mapping[int, float]], seeds: Sequence[int], looks: Sequence[int], alpha: float,
           margin: float, look_ready: Callable[[int, list[str]], bool] = lambda k, arms: True,
           may_accept: Callable[[str, str, int], bool] = lambda arm, family, k: True,
           ) -> tuple[dict[str, ArmDecision], int]:
    """Take the design's looks in order on per-seed gains.

    Args:
        gains: arm → {seed: gain} (arm − baseline, positive = better), for the arms compared with the baseline.
        seeds: the planned seed order; look ``k`` uses the first ``looks[k]``.
        looks: increasing seed counts (one for a fixed design).
        alpha: the one-sided error per side for the whole ablation (all looks, all arms).
        margin: the smallest effect worth acting on (metric units).
        look_ready: whether look ``k`` can be taken for the still-undecided ``arms`` (their trials finished).
        may_accept: whether a rejection may stand (False keeps an arm that fails more than its baseline from
            being called better or equivalent on its survivors).

    Returns:
        Per arm its decision, and the number of looks taken.
    """
    looks = tuple(looks)
    m = max(1, len(gains))
    decisions = {a: ArmDecision() for a in gains}
    rejected_in = {f: 0 for f in FAMILIES}
    undecided = list(gains)
    looks_taken = 0

    def level(family: str, k: int) -> float:
        return boundaries(looks, alpha / (m - rejected_in[family]))[k]

    for k, n_k in enumerate(looks):
        if not undecided:
            break
        if not look_ready(k, list(undecided)):
            for a in undecided:
                decisions[a].next_seeds = n_k
            break
        looks_taken = k + 1
        seeds_k = list(seeds[:n_k])
        sample = {a: [gains[a][s] for s in seeds_k if s in gains[a]] for a in undecided}
        for a in undecided:
            decisions[a].seeds_used = tuple(s for s in seeds_k if s in gains[a])
        changed = True
        while changed:  # Holm: a rejection raises the others' level; re-test at the same look
            changed = False
            for a in list(undecided):
                if len(sample[a]) < 2:
                    continue
                tests = {f: family_test(f, sample[a], margin, level(f, k)) for f in FAMILIES}
                decisions[a].tests = tests
                hit = next((f for f in FAMILIES if tests[f].rejected and may_accept(a, f, k)), None)
                if hit is None:
                    continue
                decisions[a].verdict, decisions[a].decided_at, decisions[a].level = hit, n_k, tests[hit].level
                decisions[a].next_seeds = None
                rejected_in[hit] += 1
                undecided.remove(a)
                changed = True
        for a in sample:
            d = decisions[a]
            if d.tests and (d.decided_at is None or d.decided_at == n_k):
                level_k = d.level if d.decided_at == n_k else min(t.level for t in d.tests.values())
                d.looks.append({"seeds": n_k, "level": level_k, "interval": interval(sample[a], level_k),
                                "verdict": d.verdict if d.decided_at == n_k else "inconclusive"})
        if k + 1 < len(looks):
            for a in undecided:
                decisions[a].next_seeds = looks[k + 1]
    for a in undecided:
        d = decisions[a]
        if looks_taken == len(looks):
            d.next_seeds = None
        d.level = min((t.level for t in d.tests.values()), default=boundaries(looks, alpha / m)[max(0, looks_taken - 1)])
    return decisions, looks_taken
