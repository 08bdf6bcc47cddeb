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

from reflect.config import PROFILES, TrainConfig, load_train_config
from reflect.config_loading import ConfigError, flatten, merge_into_schema, read_yaml_mapping

METRIC_MODES = ("max", "min")
# per-split metrics the evaluation writes; psnr_<region> for each region mask the dataset provides
METRIC_NAME = re.compile(r"(val|test)/(psnr|ssim|psnr_masked|ssim_masked|lpips|psnr_[A-Za-z_][A-Za-z0-9_]*)")


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
            raise ValueError("name: expected <val|test>/<psnr|ssim|psnr_masked|ssim_masked|lpips|psnr_REGION> "
                             f"(REGION: a region mask of the dataset, e.g. psnr_wrinkles), got {self.name!r}")

    @property
    def split(self) -> str:
        return self.name.split("/")[0]

    @property
    def region(self) -> Optional[str]:
        """The region mask a ``psnr_<region>`` metric scores, else None."""
        metric = self.name.split("/")[1]
        return metric[len("psnr_"):] if metric.startswith("psnr_") and metric != "psnr_masked" else None


@dataclass
class ExpectedSpec:
    gain_db: Optional[float] = None
    source: str = ""


@dataclass
class DecisionSpec:
    min_effect_db: float = 0.1
    confidence: float = 0.95

    def validate(self) -> None:
        if self.min_effect_db < 0:
            raise ValueError(f"min_effect_db: expected >= 0, got {self.min_effect_db}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence: expected a value in (0.5, 1), got {self.confidence}")


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
    seeds: Any = 3  # a count, or a list of seeds
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
        )
        if not ok:
            raise ValueError(f"seeds: expected a positive count or a list of distinct integers, got {seeds!r}")


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
    seeds: list[int]
    metric: MetricSpec
    expected: ExpectedSpec
    decision: DecisionSpec
    arms: dict[str, Arm]


def _resolve_base(base: str, ablation_path: Path) -> str:
    """A profile name, or a config path relative to the ablation file (or the CWD)."""
    if base in PROFILES:
        return base
    for candidate in (ablation_path.parent / base, Path(base)):
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(str(ablation_path), f"expected a profile ({', '.join(PROFILES)}) or an existing config file, "
                      f"got {base!r}", "base")


def load_ablation(path: str | Path, overrides: Sequence[str] = (), seeds: Optional[Sequence[int]] = None,
                  profile: Optional[str] = None) -> Ablation:
    """Read, validate and expand an ablation file (+ CLI overrides applied to every arm)."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    spec: AblationSchema = merge_into_schema(AblationSchema, [(str(path), raw)])
    base = profile or _resolve_base(spec.base, path)
    if seeds and len(set(seeds)) != len(seeds):
        raise ConfigError("--seeds", f"expected distinct seeds, got {list(seeds)}")
    seed_list = list(seeds) if seeds else (list(range(spec.seeds)) if isinstance(spec.seeds, int) else list(spec.seeds))
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
        if spec.metric.split not in arm.config.eval.splits:
            raise ConfigError(str(path), f"the metric's split {spec.metric.split!r} is not evaluated in arm "
                              f"{arm.name!r} (eval.splits = {list(arm.config.eval.splits)})", "metric.name")
    return Ablation(path=path, name=spec.name, phase=spec.phase, question=spec.question,
                    citations=list(spec.citations), base=base, baseline=spec.baseline, seeds=seed_list,
                    metric=spec.metric, expected=spec.expected, decision=spec.decision, arms=arms)
