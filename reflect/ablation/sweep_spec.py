"""The sweep file's schema and loading: what ``sweeps/*.yaml`` may hold, checked before any trial runs.

A sweep file names the training-config keys to search (``space``: float and int ranges, categorical choices,
ranges relative to the base config's value), the Optuna sampler and pruner, the trial budget and the metric.
``load_sweep`` merges it into ``SweepSpec``, resolves relative ranges against the base profile, refuses a key
that a command-line override would fix in every trial, and builds the config of every categorical choice and
both ends of every range (``check_space_values``), so a value training would refuse, or a metric no trial
evaluates, is a ``ConfigError`` naming the file and key at load time rather than a failed trial later.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import MISSING, OmegaConf

from reflect.ablation.spec import MetricSpec
from reflect.config import PROFILES, load_train_config
from reflect.config_loading import ConfigError, merge_into_schema, read_yaml_mapping

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "none")
PARAM_TYPES = ("float", "int", "categorical")


@dataclass
class ParamSpec:
    type: str = MISSING
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[List[Any]] = None
    # low/high as multiples of the base config's value at the key: one file then searches each profile's own
    # scale (the quick profile's lr_deform is 1e-3, the full profile's 5e-5)
    relative: bool = False

    def validate(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"type: expected one of {PARAM_TYPES}, got {self.type!r}")
        if self.relative and (self.type != "float" or self.step is not None):
            raise ValueError("relative: expected a float parameter without a step (low/high multiply the base value)")
        if self.relative and self.low is not None and self.low <= 0:
            raise ValueError(f"low: expected a multiplier > 0 for a relative range, got {self.low}")
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("choices: expected a non-empty list for a categorical parameter")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"low: expected low < high for a {self.type} parameter, got {self.low}, {self.high}")
        elif self.log and self.low <= 0:
            raise ValueError(f"low: expected > 0 for a log-scale parameter, got {self.low}")


@dataclass
class SamplerSpec:
    name: str = "tpe"
    seed: int = 0

    def validate(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"name: expected one of {SAMPLERS}, got {self.name!r}")


@dataclass
class PrunerSpec:
    name: str = "median"
    n_startup_trials: int = 2
    n_warmup_steps: int = 0
    min_resource: int = 1

    def validate(self) -> None:
        if self.name not in PRUNERS:
            raise ValueError(f"name: expected one of {PRUNERS}, got {self.name!r}")


@dataclass
class SweepSpec:
    name: str = MISSING
    phase: int = 1
    question: str = ""
    base: str = "quick"
    overrides: Dict[str, Any] = field(default_factory=dict)
    space: Dict[str, ParamSpec] = MISSING
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    n_trials: int = 8
    seed: int = 0
    metric: MetricSpec = field(default_factory=MetricSpec)
    # no ``decision``: a sweep makes no verdict (load_sweep says so and points to an ablation file)

    def validate(self) -> None:
        if not self.space:
            raise ValueError("space: expected at least one parameter to search")
        if self.n_trials < 1:
            raise ValueError(f"n_trials: expected a positive integer, got {self.n_trials}")
        if self.sampler.name == "grid" and any(p.type == "float" and p.step is None for p in self.space.values()):
            raise ValueError("space: the grid sampler needs categorical parameters or numeric ones with a step")


def load_sweep(path: str | Path, overrides: Sequence[str] = (), profile: Optional[str] = None) -> tuple[SweepSpec, Any]:
    """Validate the sweep file: every space key is a training-config key, every value a trial may get is valid,
    and every trial evaluates the metric (its split, and at least ``metric.window`` evaluations).

    Args:
        path: the sweep file.
        overrides: ``key=value`` training overrides for every trial.
        profile: start from this profile instead of the file's ``base`` (``--profile``).
    Returns:
        (spec with relative ranges resolved to absolute ones, (base, override layers, base config)).
    Raises:
        ConfigError: naming the file, the key and what was expected (a ``decision`` block too: sweeps take none;
            and a command-line override of a space key, which would fix that key in every trial).
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    if "decision" in raw:
        raise ConfigError(str(path), "a sweep takes no decision block: it reports each trial's metric and the best "
                          "configuration, with no baseline or verdict for a margin to apply to; to decide between "
                          "configurations with a margin and a confidence, write an ablation file with them as arms "
                          "(ablations/*.yaml, python -m reflect.ablate)", "decision")
    spec: SweepSpec = merge_into_schema(SweepSpec, [(str(path), raw)])
    if profile is not None:
        spec.base = profile
    _check_overrides_outside_space(spec, path, overrides)
    base = spec.base if spec.base in PROFILES else str((path.parent / spec.base))
    layers = [(f"{path}: overrides", list(spec.overrides.items()))]
    base_cfg = load_train_config(base, overrides, extra_layers=layers)
    for key, p in list(spec.space.items()):
        if p.relative:
            value = OmegaConf.select(OmegaConf.structured(base_cfg), key, default=None)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(str(path), f"a relative range needs a positive number at {key} in the base config, "
                                  f"got {value!r}", f"space.{key}")
            spec.space[key] = dataclasses.replace(p, low=p.low * value, high=p.high * value, relative=False)
    check_space_values(spec, path, base, overrides, layers)
    return spec, (base, layers, base_cfg)


def _check_overrides_outside_space(spec: SweepSpec, path: Path, overrides: Sequence[str]) -> None:
    """Refuse a command-line override of a space key: the command line is the last layer of each trial's config,
    after the sampled values, so the override would silently fix the key in every trial."""
    for item in overrides:
        if isinstance(item, tuple):
            key = str(item[0]).strip()
        elif "=" in item:
            key = item.partition("=")[0].strip()
        else:
            continue  # not key=value: load_train_config names it
        if key in spec.space:
            raise ConfigError("command line", f"is in the sweep's space ({path}); a command-line override would fix "
                              "it in every trial: remove one of the two", key)


def space_values(p: ParamSpec) -> list[tuple[str, Any]]:
    """The values of one search-space parameter that validation tries, each with its name in an error.

    Args:
        p: a validated parameter (relative ranges already resolved).
    Returns:
        ``[(label, value)]``: every choice of a categorical parameter; ``low`` and the highest value a numeric
        range can give (``high``, or with a ``step`` the last step at or below it, as Optuna samples) — values in
        between are checked when a trial is built.
    """
    if p.type == "categorical":
        return [("choice", c) for c in p.choices]
    cast = int if p.type == "int" else (lambda v: v)
    top = p.high if p.step is None else p.low + (range_steps(p.low, p.high, p.step) - 1) * p.step
    return [("low", cast(p.low)), ("high", cast(top))]


def range_steps(low: float, high: float, step: float) -> int:
    """How many values ``low, low + step, ...`` lie in [low, high] (float rounding tolerated, never past high)."""
    return int(math.floor((high - low) / step + 1e-9)) + 1


def check_space_values(spec: SweepSpec, path: Path, base: str, overrides: Sequence[str], layers: list) -> None:
    """Build a trial config with each value of each space key (the other keys at their first value) and check
    that it is valid and that the trial evaluates the sweep's metric.

    Args:
        spec: the sweep (relative ranges resolved).
        path: the sweep file, named in errors.
        base: the profile or config file trials start from.
        overrides: command-line ``key=value`` overrides.
        layers: the file's own override layers.
    Raises:
        ConfigError: at ``space.<key>`` naming the bad value (``choice 2.0``, ``high 1.5``) and what was expected;
            at ``metric.name`` / ``metric.window`` when a trial would not evaluate the metric.
    """
    from reflect.ablation.spec import check_metric_is_evaluated

    first = {key: space_values(p)[0][1] for key, p in spec.space.items()}
    probes: list[tuple[Optional[str], str, Any]] = [(None, "", None)]
    probes += [(key, label, value) for key, p in spec.space.items() for label, value in space_values(p)[1:]
               if not (label == "choice" and value == first[key])]
    configs = []
    for key, label, value in probes:
        values = dict(first) if key is None else {**first, key: value}
        try:
            cfg = load_train_config(base, overrides, extra_layers=layers + [(f"{path}: space", list(values.items()))])
        except ConfigError as exc:
            blamed = key if key is not None else (exc.key if exc.key in spec.space else None)
            if blamed is None or exc.message.startswith("unknown key"):  # not about a value
                raise ConfigError(str(path), exc.message, f"space.{exc.key}" if exc.key else "space") from None
            if key is None:
                label, value = space_values(spec.space[blamed])[0]
            detail = exc.message if exc.key == blamed else f"{exc.key}: {exc.message}"
            raise ConfigError(str(path), f"{label} {value!r}: {detail}", f"space.{blamed}") from None
        configs.append((key, value, cfg))

    def metric_error(cfg: Any, who: str) -> Optional[ConfigError]:
        try:
            check_metric_is_evaluated(spec.metric, cfg, str(path), who)
        except ConfigError as exc:
            return exc
        return None

    failing = [i for i, (_, _, cfg) in enumerate(configs) if metric_error(cfg, "") is not None]
    if not failing:
        return
    if len(failing) == len(configs):  # not the space's doing: no trial would evaluate the metric
        raise metric_error(configs[0][2], "each trial")
    if failing[0] > 0:  # one value of one key
        key, value, cfg = configs[failing[0]]
        raise metric_error(cfg, f"a trial with {key} = {value!r}")
    # every key at its first value fails: the key with another value that passes is the one to name
    key = next(configs[i][0] for i in range(1, len(configs)) if i not in failing)
    raise metric_error(configs[0][2], f"a trial with {key} = {first[key]!r}")
