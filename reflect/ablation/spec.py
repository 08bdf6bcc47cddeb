"""The ablation file: a roadmap decision as a question, citations, arms, seeds and a metric.

``load_ablation(path)`` validates everything a run will need (including that
every arm's overrides produce a valid training config) and reports problems
as ConfigError naming the file, the key and what was expected.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import MISSING

from reflect.ablation.seeds import SeedDesign, default_looks
from reflect.config import PROFILES, TrainConfig, load_train_config
from reflect.config_loading import ConfigError, flatten, merge_into_schema, read_yaml_mapping

METRIC_MODES = ("max", "min")
# per-split metrics the evaluation writes; psnr_<region> for each region mask the dataset provides
METRIC_NAME = re.compile(r"(val|test|mirror)/(psnr|ssim|psnr_masked|ssim_masked|lpips|psnr_[A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class MetricSpec:
    name: str = "val/psnr"
    mode: str = "max"
    window: int = 20  # mean of the last N evaluations ("avg20")

    def validate(self) -> None:
        if self.mode not in METRIC_MODES:
            raise ValueError(f"mode: expected 'max' or 'min', got {self.mode!r}")
        if self.window < 1:
            raise ValueError(f"window: expected a positive integer, got {self.window}")
        if not METRIC_NAME.fullmatch(self.name):
            raise ValueError("name: expected <val|test|mirror>/<psnr|ssim|psnr_masked|ssim_masked|lpips|psnr_REGION> "
                             f"(REGION: a region mask of the dataset, e.g. psnr_wrinkles), got {self.name!r}")

    @property
    def split(self) -> str:
        return self.name.split("/")[0]

    @property
    def kind(self) -> str:
        """psnr (every psnr_* metric, in dB), ssim or lpips: what unit a margin is in."""
        metric = self.name.split("/")[1]
        return "psnr" if metric.startswith("psnr") else metric.split("_")[0]

    @property
    def region(self) -> Optional[str]:
        """The region mask a ``psnr_<region>`` metric scores, else None."""
        metric = self.name.split("/")[1]
        return metric[len("psnr_"):] if metric.startswith("psnr_") and metric != "psnr_masked" else None


@dataclass
class ExpectedSpec:
    gain_db: Optional[float] = None
    source: str = ""


DEFAULT_PSNR_MARGIN_DB = 0.1


@dataclass
class DecisionSpec:
    """The margin (smallest effect worth acting on) and the confidence of every verdict.

    ``min_effect_db`` is the margin of a PSNR metric (dB); ``margin`` is the margin in the metric's own unit
    (dB for PSNR, an absolute amount for SSIM and LPIPS). Give one of them; PSNR defaults to 0.1 dB.
    ``confidence`` 0.95 means α = 0.025 per side, over all looks and arms.
    """

    min_effect_db: Optional[float] = None
    margin: Optional[float] = None
    confidence: float = 0.95

    def validate(self) -> None:
        for key in ("min_effect_db", "margin"):
            value = getattr(self, key)
            if value is not None and not value >= 0:
                raise ValueError(f"{key}: expected a margin >= 0, got {value}")
        if self.min_effect_db is not None and self.margin is not None:
            raise ValueError("margin: give either min_effect_db (dB, PSNR metrics) or margin (the metric's unit), "
                             "not both")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence: expected a value in (0.5, 1), got {self.confidence}")

    @property
    def alpha(self) -> float:
        """The one-sided error per side."""
        return round((1 - self.confidence) / 2, 12)

    def margin_for(self, metric: "MetricSpec", source: str) -> float:
        """The margin in ``metric``'s unit; a dB margin on an SSIM/LPIPS metric is an error naming the key."""
        if metric.kind == "psnr":
            value = self.margin if self.margin is not None else self.min_effect_db
            return DEFAULT_PSNR_MARGIN_DB if value is None else float(value)
        if self.min_effect_db is not None:
            raise ConfigError(source, f"a margin in dB does not apply to {metric.name} (a 0-1 scale); give "
                              f"decision.margin as an absolute {metric.kind.upper()} amount (e.g. 0.005)",
                              "decision.min_effect_db")
        if self.margin is None:
            raise ConfigError(source, f"expected a margin for {metric.name} in its own unit (an absolute "
                              f"{metric.kind.upper()} amount, e.g. 0.005)", "decision.margin")
        return float(self.margin)


SEED_PLAN_KEYS = ("min", "max", "looks")


def parse_seed_design(seeds: Any, source: str) -> SeedDesign:
    """``seeds:`` of an ablation file → a design: a count or a list is fixed; ``{min, max[, looks]}`` sequential."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return SeedDesign(tuple(range(seeds)), (seeds,))
    if isinstance(seeds, list):
        return SeedDesign(tuple(seeds), (len(seeds),))
    unknown = sorted(set(seeds) - set(SEED_PLAN_KEYS))
    if unknown:
        raise ConfigError(source, f"unknown key {unknown[0]!r}; expected min, max and optionally looks", "seeds")
    low, high = seeds.get("min"), seeds.get("max")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) or not 2 <= low < high:
        raise ConfigError(source, f"expected integers 2 <= min < max (a paired t-test needs 2 seeds), got "
                          f"min={low!r}, max={high!r}", "seeds")
    looks = seeds.get("looks")
    if looks is None:
        looks = list(default_looks(low, high))
    if (not isinstance(looks, list) or not all(isinstance(n, int) for n in looks) or looks != sorted(set(looks))
            or looks[0] != low or looks[-1] != high):
        raise ConfigError(source, f"expected increasing seed counts from min ({low}) to max ({high}), got {looks!r}",
                          "seeds.looks")
    return SeedDesign(tuple(range(high)), tuple(looks))


@dataclass
class AblationSchema:
    """The file's shape, checked by OmegaConf (types, unknown keys)."""

    name: str = MISSING
    phase: int = MISSING
    question: str = MISSING
    citations: List[str] = MISSING
    base: str = "quick"
    arms: Dict[str, Dict[str, Any]] = MISSING
    baseline: str = MISSING
    seeds: Any = 3  # a count or a list of seeds (fixed design), or {min, max, looks} (sequential)
    metric: MetricSpec = field(default_factory=MetricSpec)
    expected: ExpectedSpec = field(default_factory=ExpectedSpec)
    decision: DecisionSpec = field(default_factory=DecisionSpec)

    def validate(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"name: expected letters, digits, '-' or '_' (it names folders), got {self.name!r}")
        if not 1 <= self.phase <= 6:
            raise ValueError(f"phase: expected a roadmap phase 1..6, got {self.phase}")
        if len([c for c in self.citations if str(c).strip()]) < 2:
            raise ValueError(
                f"citations: expected at least two citations (the roadmap's rule: every decision has 2+ paper "
                f"citations), got {len(self.citations)}"
            )
        if len(self.arms) < 2:
            raise ValueError(f"arms: expected at least two arms to compare, got {len(self.arms)}")
        if self.baseline not in self.arms:
            raise ValueError(f"baseline: expected one of the arms {sorted(self.arms)}, got {self.baseline!r}")
        seeds = self.seeds
        ok = (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1) or (
            isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds) and len(set(seeds)) == len(seeds)
        ) or isinstance(seeds, dict)
        if not ok:
            raise ValueError(f"seeds: expected a positive count, a list of distinct integers or "
                             f"{{min, max, looks}}, got {seeds!r}")


@dataclass
class Arm:
    name: str
    overrides: dict[str, Any]
    config: TrainConfig


@dataclass
class Ablation:
    path: Path
    name: str
    phase: int
    question: str
    citations: list[str]
    base: str
    baseline: str
    seeds: list[int]  # every seed the design may run (a sequential design's max)
    metric: MetricSpec
    expected: ExpectedSpec
    decision: DecisionSpec
    arms: dict[str, Arm]
    design: SeedDesign = None  # type: ignore[assignment]
    file_design: SeedDesign = None  # type: ignore[assignment]  # the file's own (differs under --seeds)
    margin: float = DEFAULT_PSNR_MARGIN_DB  # in the metric's unit
    overrides: tuple[str, ...] = ()  # command-line overrides applied to every arm
    identity_cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def seeds_from_command_line(self) -> bool:
        return self.design != self.file_design


def _resolve_base(base: str, ablation_path: Path) -> str:
    """A profile name, or a config path relative to the ablation file (or the CWD)."""
    if base in PROFILES:
        return base
    for candidate in (ablation_path.parent / base, Path(base)):
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(str(ablation_path), f"expected a profile ({', '.join(PROFILES)}) or an existing config file, "
                      f"got {base!r}", "base")


def check_metric_is_evaluated(metric: MetricSpec, cfg: TrainConfig, source: str, who: str) -> None:
    """Check that a trial trained with ``cfg`` evaluates ``metric`` often enough for its window.

    Shared by ablation files (one check per arm) and sweep files (each value of the search space).

    Args:
        metric: the study's metric (its split and its window of evaluations).
        cfg: the trial's training config.
        source: the study file, named in the error.
        who: the trial in words, as the error names it (``"arm 'baseline'"``, ``"each trial"``).
    Raises:
        ConfigError: at ``metric.name`` when the metric's split is not in ``cfg.eval.splits``; at ``metric.window``
            when the window is longer than the number of evaluations the trial makes.
    """
    if metric.split not in cfg.eval.splits:
        raise ConfigError(source, f"the metric's split {metric.split!r} is not evaluated in {who} "
                          f"(eval.splits = {list(cfg.eval.splits)})", "metric.name")
    # every eval_every steps, and always once more on the final weights
    evaluations = -(-cfg.trainer.max_steps // cfg.trainer.eval_every)
    if metric.window > evaluations:
        raise ConfigError(source, f"expected at most the {evaluations} evaluations {who} makes "
                          f"(trainer.max_steps {cfg.trainer.max_steps} / trainer.eval_every "
                          f"{cfg.trainer.eval_every}, rounded up), got {metric.window}", "metric.window")


def load_ablation(path: str | Path, overrides: Sequence[str] = (), seeds: Optional[Sequence[int]] = None,
                  profile: Optional[str] = None) -> Ablation:
    """Read, validate and expand an ablation file (+ CLI overrides applied to every arm)."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    spec: AblationSchema = merge_into_schema(AblationSchema, [(str(path), raw)])
    base = profile or _resolve_base(spec.base, path)
    if seeds and len(set(seeds)) != len(seeds):
        raise ConfigError("--seeds", f"expected distinct seeds, got {list(seeds)}")
    file_design = parse_seed_design(spec.seeds if not isinstance(spec.seeds, dict) else dict(spec.seeds), str(path))
    design = SeedDesign(tuple(seeds), (len(seeds),)) if seeds else file_design
    margin = spec.decision.margin_for(spec.metric, str(path))
    arms: dict[str, Arm] = {}
    for arm_name, arm_overrides in spec.arms.items():
        arm_overrides = dict(arm_overrides or {})
        # Arm overrides are dotted keys of the training config; nested mappings are flattened.
        pairs = list(flatten(arm_overrides).items())
        try:
            cfg = load_train_config(base, overrides, extra_layers=[(f"{path}: arms.{arm_name}", pairs)])
        except ConfigError as exc:
            if exc.source.startswith(f"{path}: arms."):
                raise ConfigError(str(path), exc.message, f"arms.{arm_name}.{exc.key}" if exc.key else f"arms.{arm_name}") from None
            raise
        arms[arm_name] = Arm(arm_name, dict(pairs), cfg)
    for arm in arms.values():
        check_metric_is_evaluated(spec.metric, arm.config, str(path), f"arm {arm.name!r}")
        # keep per-frame metrics for every evaluation the window averages (not part of a trial's identity)
        arm.config.eval.per_frame_history = max(arm.config.eval.per_frame_history, spec.metric.window)
    return Ablation(path=path, name=spec.name, phase=spec.phase, question=spec.question,
                    citations=list(spec.citations), base=base, baseline=spec.baseline, seeds=list(design.seeds),
                    metric=spec.metric, expected=spec.expected, decision=spec.decision, arms=arms, design=design,
                    file_design=file_design, margin=margin, overrides=tuple(overrides))
