"""``roadmap.yaml``: the photorealism roadmap as typed, validated data (ladder, phases, decisions, gates).

Gates are data, never code: each is a list of conditions of five kinds —

- metric:     ``{metric: val/psnr, window: 20, comparator: ">=" | ">" | "<=" | "<" | between, threshold | range}``
- latency:    ``{latency: "3840x2160", comparator: "<", threshold_ms: 10}`` (read from a recorded benchmark)
- comparison: ``{compare: mirror/psnr, against: val/psnr, margin: 0.5}`` (the two match within the margin)
- decision:   ``{decision: multi_session, verdict: better}`` (a decision's ablation reached that verdict)
- sign-off:   ``{signoff: expression_tracking, text: "..."}`` (a recorded human check)

Hand-written validation (not OmegaConf): a condition is a union of shapes, which structured configs cannot
express; every error still names the file, the key path and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from reflect.config_loading import ConfigError, read_yaml_mapping

GATE_NAMES = ("GO", "ITERATE", "REASSESS", "PUSH HARDER", "SHIP", "INVESTIGATE")
COMPARATORS = (">=", ">", "<=", "<", "between")
DEFAULT_ROADMAP = Path(__file__).resolve().parents[2] / "roadmap.yaml"


@dataclass(frozen=True)
class MetricCondition:
    metric: str
    window: int
    comparator: str
    threshold: Optional[float] = None
    range: Optional[tuple[float, float]] = None
    text: str = ""

    def describe(self) -> str:
        bound = f"in [{self.range[0]:g}, {self.range[1]:g}]" if self.comparator == "between" else \
            f"{self.comparator} {self.threshold:g}"
        return f"{self.metric} avg{self.window} {bound}"


@dataclass(frozen=True)
class LatencyCondition:
    output: str  # "3840x2160"
    comparator: str
    threshold_ms: float
    text: str = ""
    min_gaussians: int = 100_000  # a benchmark of a toy scene does not pass a latency gate

    def describe(self) -> str:
        return f"{self.output} output {self.comparator} {self.threshold_ms:g} ms"


@dataclass(frozen=True)
class ComparisonCondition:
    metric: str
    against: str
    margin: float
    text: str = ""

    def describe(self) -> str:
        return f"{self.metric} within ±{self.margin:g} of {self.against}"


@dataclass(frozen=True)
class DecisionCondition:
    decision: str
    verdict: str
    text: str = ""

    def describe(self) -> str:
        return f"decision {self.decision} is {self.verdict}"


@dataclass(frozen=True)
class SignoffCondition:
    check: str
    text: str = ""

    def describe(self) -> str:
        return f"sign-off {self.check}: {self.text}"


Condition = Union[MetricCondition, LatencyCondition, ComparisonCondition, DecisionCondition, SignoffCondition]


@dataclass(frozen=True)
class Gate:
    name: str
    text: str
    conditions: tuple[Condition, ...]
    next_phase: Optional[int] = None  # a gate that passes the phase (GO, SHIP)
    source: str = "ROADMAP_V3"  # or where a number the roadmap does not state comes from


@dataclass(frozen=True)
class Decision:
    id: str
    claim: str
    citations: tuple[str, ...]
    file: Path  # absolute
    planned: bool = False  # the file is not written yet
    expected_db: Optional[float] = None
    note: str = ""  # e.g. where the expected gain was measured, when not on this task

    @property
    def is_sweep(self) -> bool:
        return self.file.parent.name == "sweeps"


@dataclass(frozen=True)
class Phase:
    phase: int
    title: str
    db_range: str
    duration: str
    decisions: tuple[Decision, ...]
    gates: tuple[Gate, ...]

    @property
    def passing_gates(self) -> tuple[Gate, ...]:
        return tuple(g for g in self.gates if g.next_phase is not None)


@dataclass(frozen=True)
class Milestone:
    milestone: str
    psnr: float
    ssim: float
    lpips: float
    looks_like: str
    phase: Optional[int] = None
    psnr_high: Optional[float] = None


@dataclass(frozen=True)
class Roadmap:
    path: Path
    name: str
    title: str
    ladder: tuple[Milestone, ...]
    phases: tuple[Phase, ...]
    not_to_do: tuple[dict[str, str], ...] = ()
    references: tuple[dict[str, str], ...] = ()

    def decision(self, decision_id: str) -> Optional[Decision]:
        return next((d for p in self.phases for d in p.decisions if d.id == decision_id), None)


class _Reader:
    """Key-path-aware access to the raw mapping; every error names the file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(str(self.path), message, key)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0],
                            f"unknown key; expected one of {', '.join(allowed)}")
        for k in required:
            if k not in value:
                raise self.fail(f"{key}.{k}" if key else k, "missing")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number, got {value!r}")
        return float(value)

    def items(self, value: Any, key: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {type(value).__name__}")
        return value


def _condition(r: _Reader, raw: Any, key: str) -> Condition:
    if not isinstance(raw, dict):
        raise r.fail(key, f"expected a condition mapping, got {type(raw).__name__}")
    text = str(raw.get("text", ""))
    if "metric" in raw:
        c = r.mapping(raw, key, ("metric", "window", "comparator", "threshold", "range", "text"), ("comparator",))
        comparator = c["comparator"]
        if comparator not in COMPARATORS:
            raise r.fail(f"{key}.comparator", f"expected one of {', '.join(COMPARATORS)}, got {comparator!r}")
        window = c.get("window", 20)
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise r.fail(f"{key}.window", f"expected a positive number of evaluations, got {window!r}")
        if comparator == "between":
            rng = c.get("range")
            if not isinstance(rng, list) or len(rng) != 2 or r.number(rng[0], f"{key}.range") >= r.number(rng[1], f"{key}.range"):
                raise r.fail(f"{key}.range", f"expected [low, high] with low < high, got {rng!r}")
            return MetricCondition(str(c["metric"]), window, comparator, range=(float(rng[0]), float(rng[1])), text=text)
        if "threshold" not in c:
            raise r.fail(f"{key}.threshold", f"missing (comparator {comparator!r} needs a threshold)")
        return MetricCondition(str(c["metric"]), window, comparator, threshold=r.number(c["threshold"], f"{key}.threshold"),
                               text=text)
    if "latency" in raw:
        c = r.mapping(raw, key, ("latency", "comparator", "threshold_ms", "min_gaussians", "text"),
                      ("comparator", "threshold_ms"))
        if c["comparator"] not in ("<", "<="):
            raise r.fail(f"{key}.comparator", f"expected '<' or '<=' for a latency, got {c['comparator']!r}")
        output = str(c["latency"])
        if "x" not in output or not all(p.isdigit() for p in output.split("x")):
            raise r.fail(f"{key}.latency", f"expected an output resolution WIDTHxHEIGHT, got {output!r}")
        return LatencyCondition(output, c["comparator"], r.number(c["threshold_ms"], f"{key}.threshold_ms"), text,
                                int(r.number(c.get("min_gaussians", 100_000), f"{key}.min_gaussians")))
    if "compare" in raw:
        c = r.mapping(raw, key, ("compare", "against", "margin", "text"), ("against", "margin"))
        return ComparisonCondition(str(c["compare"]), str(c["against"]), r.number(c["margin"], f"{key}.margin"), text)
    if "decision" in raw:
        c = r.mapping(raw, key, ("decision", "verdict", "text"), ("verdict",))
        if c["verdict"] not in ("better", "worse", "equivalent"):
            raise r.fail(f"{key}.verdict", f"expected better, worse or equivalent, got {c['verdict']!r}")
        return DecisionCondition(str(c["decision"]), c["verdict"], text)
    if "signoff" in raw:
        c = r.mapping(raw, key, ("signoff", "text"))
        return SignoffCondition(str(c["signoff"]), text)
    raise r.fail(key, "expected a condition with one of the keys metric, latency, compare, decision, signoff")


def _decision(r: _Reader, raw: Any, key: str, root: Path) -> Decision:
    d = r.mapping(raw, key, ("id", "claim", "citations", "file", "planned", "expected_db", "note"),
                  ("id", "claim", "citations", "file"))
    citations = tuple(str(c) for c in r.items(d["citations"], f"{key}.citations"))
    if len(citations) < 2:
        raise r.fail(f"{key}.citations", f"expected at least two citations (the roadmap's rule), got {len(citations)}")
    file = (root / str(d["file"])).resolve()
    planned = bool(d.get("planned", False))
    if not planned and not file.is_file():
        raise r.fail(f"{key}.file", f"{d['file']} does not exist (mark the decision `planned: true` until it is written)")
    if planned and file.is_file():
        raise r.fail(f"{key}.planned", f"{d['file']} exists: remove `planned: true`")
    expected = d.get("expected_db")
    return Decision(str(d["id"]), str(d["claim"]), citations, file, planned,
                    None if expected is None else r.number(expected, f"{key}.expected_db"), str(d.get("note", "")))


def load_roadmap(path: str | Path = DEFAULT_ROADMAP) -> Roadmap:
    """Read and validate a roadmap file; raises ConfigError naming the file and key on any problem.

    Args:
        path: the roadmap YAML (default: the repository's ``roadmap.yaml``).
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    r = _Reader(path)
    top = r.mapping(raw, "", ("name", "title", "ladder", "phases", "not_to_do", "references"), ("name", "phases"))
    ladder = []
    for i, m in enumerate(r.items(top.get("ladder"), "ladder")):
        key = f"ladder[{i}]"
        m = r.mapping(m, key, ("milestone", "phase", "psnr", "psnr_high", "ssim", "lpips", "looks_like"),
                      ("milestone", "psnr", "ssim", "lpips"))
        ladder.append(Milestone(str(m["milestone"]), r.number(m["psnr"], f"{key}.psnr"), r.number(m["ssim"], f"{key}.ssim"),
                                r.number(m["lpips"], f"{key}.lpips"), str(m.get("looks_like", "")), m.get("phase"),
                                None if m.get("psnr_high") is None else r.number(m["psnr_high"], f"{key}.psnr_high")))
    phases, ids = [], set()
    if not r.items(top["phases"], "phases"):
        raise r.fail("phases", "expected at least one phase")
    for i, p in enumerate(r.items(top["phases"], "phases")):
        key = f"phases[{i}]"
        p = r.mapping(p, key, ("phase", "title", "db_range", "duration", "decisions", "gates"), ("phase", "title"))
        if p["phase"] != i + 1:
            raise r.fail(f"{key}.phase", f"expected phase {i + 1} (phases are listed in order), got {p['phase']!r}")
        decisions = []
        for j, d in enumerate(r.items(p.get("decisions"), f"{key}.decisions")):
            dec = _decision(r, d, f"{key}.decisions[{j}]", path.parent)
            if dec.id in ids:
                raise r.fail(f"{key}.decisions[{j}].id", f"duplicate decision id {dec.id!r}")
            ids.add(dec.id)
            decisions.append(dec)
        gates = []
        for j, g in enumerate(r.items(p.get("gates"), f"{key}.gates")):
            gkey = f"{key}.gates[{j}]"
            g = r.mapping(g, gkey, ("gate", "text", "next_phase", "conditions", "source"), ("gate", "conditions"))
            if g["gate"] not in GATE_NAMES:
                raise r.fail(f"{gkey}.gate", f"expected one of {', '.join(GATE_NAMES)}, got {g['gate']!r}")
            nxt = g.get("next_phase")
            if nxt is not None and (not isinstance(nxt, int) or isinstance(nxt, bool) or nxt != i + 2):
                raise r.fail(f"{gkey}.next_phase", f"expected {i + 2} (the phase after this one), got {nxt!r}")
            conds = tuple(_condition(r, c, f"{gkey}.conditions[{k}]")
                          for k, c in enumerate(r.items(g["conditions"], f"{gkey}.conditions")))
            if not conds:
                raise r.fail(f"{gkey}.conditions", "expected at least one condition")
            gates.append(Gate(g["gate"], str(g.get("text", "")), conds, g.get("next_phase"),
                              str(g.get("source", "ROADMAP_V3"))))
        phases.append(Phase(p["phase"], str(p["title"]), str(p.get("db_range", "")), str(p.get("duration", "")),
                            tuple(decisions), tuple(gates)))
    for i, phase in enumerate(phases):
        for j, gate in enumerate(phase.gates):
            for k, c in enumerate(gate.conditions):
                if isinstance(c, DecisionCondition) and c.decision not in ids:
                    raise r.fail(f"phases[{i}].gates[{j}].conditions[{k}].decision",
                                 f"no decision with id {c.decision!r} in this roadmap")
    not_to_do = []
    for i, item in enumerate(r.items(top.get("not_to_do"), "not_to_do")):
        key = f"not_to_do[{i}]"
        item = r.mapping(item, key, ("item", "evidence", "file"), ("item", "evidence"))
        if "file" in item and not (path.parent / str(item["file"])).is_file():
            raise r.fail(f"{key}.file", f"{item['file']} does not exist (the ablation that confirms the item)")
        not_to_do.append({k: str(v) for k, v in item.items()})
    return Roadmap(path, str(top["name"]), str(top.get("title", top["name"])), tuple(ladder), tuple(phases),
                   tuple(not_to_do), tuple(top.get("references") or ()))
