"""``python -m reflect.sweep FILE``: an Optuna search over training-config knobs.

Samplers and pruners are Optuna's own (TPE, random, grid, CMA-ES; median,
Hyperband); every trial is recorded in the results store like an ablation
trial, so a rerun returns finished configurations from the store instead of
retraining them. ``--export-wandb OUT.yaml`` writes the equivalent W&B sweep.
"""
from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # the CLI and its spawned workers: imports without the cyclic GC
    from reflect.startup import pause_gc

    pause_gc()

import argparse
import copy
import dataclasses
import multiprocessing as mp
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import optuna
import yaml
from omegaconf import MISSING, OmegaConf
from pytorch_lightning.callbacks import Callback
from rich.console import Console
from rich.table import Table

from reflect.ablation.spec import MetricSpec
from reflect.cli_errors import exit_on_user_error
from reflect.config import PROFILES, load_train_config
from reflect.config_loading import ConfigError, merge_into_schema, read_yaml_mapping
from reflect.startup import freeze_imports

console = Console()
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
        ConfigError: naming the file, the key and what was expected (a ``decision`` block too: sweeps take none).
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


def space_values(p: ParamSpec) -> list[tuple[str, Any]]:
    """The values of one search-space parameter that validation tries, each with its name in an error.

    Args:
        p: a validated parameter (relative ranges already resolved).
    Returns:
        ``[(label, value)]``: every choice of a categorical parameter; ``low`` and ``high`` of a numeric range
        (what the file allows at either end; values in between are checked when a trial is built).
    """
    if p.type == "categorical":
        return [("choice", c) for c in p.choices]
    cast = int if p.type == "int" else (lambda v: v)
    return [("low", cast(p.low)), ("high", cast(p.high))]


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


def make_sampler(spec: SweepSpec, worker_index: int = 0, resumed_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler for one worker: each worker's stream is seeded apart (``seed + worker_index``), or two
    workers with one seed would suggest the same values in pairs; a restart on a study that already has trials
    starts a new stream (else it would repeat its first suggestions, each a cached result).

    Args:
        spec: the sweep.
        worker_index: the worker's index.
        resumed_trials: how many trials the study already holds.
    Returns:
        A TPE, random, CMA-ES or grid sampler (the grid: every choice, every step of a numeric range; every
        integer of an int range without a step).
    """
    s = spec.sampler
    seed = None if s.seed is None else s.seed + worker_index + 1009 * resumed_trials
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    grid = {}
    for key, p in spec.space.items():
        if p.type == "categorical":
            grid[key] = list(p.choices)
        else:
            step = p.step if p.step is not None else 1  # an int range without a step: every integer
            n = int(round((p.high - p.low) / step)) + 1
            grid[key] = [type(p.low)(p.low + i * step) if p.type == "float" else int(p.low + i * step)
                         for i in range(n)]
    return optuna.samplers.GridSampler(grid, seed=s.seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The sweep's pruner.

    Args:
        spec: the sweep.
    Returns:
        Optuna's median or Hyperband pruner with the file's settings, or a pruner that never prunes (``none``).
    """
    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, key: str, p: ParamSpec) -> Any:
    """Ask ``trial`` for the value of one space parameter.

    Args:
        trial: the running Optuna trial (a re-queued copy returns the value it already holds).
        key: the training-config key, also the Optuna parameter name.
        p: its range or choices.
    Returns:
        The value for this trial.
    """
    if p.type == "categorical":
        return trial.suggest_categorical(key, list(p.choices))
    if p.type == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)


class StepPruningCallback(Callback):
    """Reports the metric to Optuna at each evaluation's *global step* and prunes.

    Hand-written because optuna-integration's PyTorchLightningPruningCallback
    reports per epoch, and our trainer evaluates every N steps inside one long
    epoch, so every report after the first would land on the same step.
    """

    def __init__(self, trial: optuna.Trial, monitor: str):
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not pl_module.eval_history:
            return
        value = pl_module.eval_history[-1].get(self.monitor)
        if value is None:
            return
        self.trial.report(float(value), step=int(trainer.global_step))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor}={value:.3f} at step {trainer.global_step}")


WORKER_ATTR = "reflect_worker"  # who asked a trial ({host, pid, asked_at}): its liveness until its record exists
CRASHES_ATTR = "reflect_crashes"  # how many times a trial's worker died under it (a clean Ctrl-C is not a crash)


def trial_record(trial: optuna.trial.FrozenTrial, records: Sequence[Any]) -> Optional[Any]:
    """The store record a sweep trial wrote, if any.

    Args:
        trial: the Optuna trial.
        records: the sweep store's records.
    Returns:
        The latest record naming ``trial.number`` written since the trial was asked (a record left by an earlier,
        deleted journal of the same sweep names the same numbers but is older), or None.
    """
    since = (trial.user_attrs.get(WORKER_ATTR) or {}).get("asked_at")
    mine = [r for r in records if r.optuna_trial == trial.number and (since is None or r.updated_at >= since - 1.0)]
    return max(mine, key=lambda r: r.updated_at, default=None)


def trial_is_live(study: optuna.Study, trial: optuna.trial.FrozenTrial, record: Optional[Any]) -> bool:
    """Whether a worker still runs a RUNNING sweep trial (``reflect.ablation.queue.is_live``'s rule).

    Args:
        study: the sweep's study.
        trial: a RUNNING trial of it.
        record: its store record (``trial_record``), or None.
    Returns:
        On a heartbeat storage, what the database says (call ``reap_stale`` first). On the journal, whether the
        process holding the trial lives: the one that wrote its record, or before there is one, the one that
        asked it (same host: its pid lives and is not this process; another host: it wrote or asked within
        ``STALE_AFTER_S``). A record that is already finished (interrupted, complete) while the trial is still
        RUNNING is a worker that stopped without telling Optuna: alive only while that process is.
    """
    from optuna.trial import TrialState

    from reflect.ablation.queue import is_live
    from reflect.ablation.store import RUNNING, TrialRecord
    from reflect.ablation.study import uses_heartbeat

    if uses_heartbeat(study):
        return trial.state == TrialState.RUNNING
    if record is not None:
        return is_live(study, trial, dataclasses.replace(record, status=RUNNING))
    holder = trial.user_attrs.get(WORKER_ATTR) or {}
    asked_at = holder.get("asked_at") or (trial.datetime_start.timestamp() if trial.datetime_start else 0.0)
    claim = TrialRecord(study=study.study_name, arm="", seed=0, config_hash="", status=RUNNING,
                        host=str(holder.get("host", "")), pid=int(holder.get("pid", 0)), updated_at=float(asked_at))
    return not claim.is_stale()


def reap_dead_trials(study: optuna.Study, store: Any) -> list[str]:
    """On a storage without heartbeats (the journal), take back the RUNNING trials whose worker is gone, as the
    database's stale-trial callback does on PostgreSQL. Call under the sweep's budget lock.

    A trial whose record finished (complete, failed, pruned) but was never told is told its record's outcome. Any
    other (killed mid-training, stopped by Ctrl-C, or dead before writing a record) is failed and a copy queued
    with its params, its name (``reflect_arm``: the copy resumes the same work folder and checkpoint) and
    ``retry_history`` (so ``spent()`` counts the copy, not both). A trial whose worker died more than
    ``MAX_RETRIES`` times (a crash that kills the process each time) stays failed, its record too.

    Args:
        study: the sweep's study.
        store: the sweep's results store.
    Returns:
        One line per trial taken back, for the log.
    """
    from optuna.trial import TrialState

    from reflect.ablation.store import COMPLETE, FAILED, INTERRUPTED, PRUNED, RUNNING
    from reflect.ablation.study import MAX_RETRIES, mark_failed, uses_heartbeat

    if uses_heartbeat(study):
        return []
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    records = list(store.records())
    lines = []
    for t in running:
        record = trial_record(t, records)
        if trial_is_live(study, t, record):
            continue
        name = t.user_attrs.get("reflect_arm") or f"trial {t.number}"
        if record is not None and record.status in (COMPLETE, PRUNED, FAILED):  # finished: only the tell was lost
            try:
                if record.status == FAILED:
                    mark_failed(study, t.number, record.failure_reason or "failed")
                elif record.status == PRUNED:
                    study.tell(t.number, state=TrialState.PRUNED)
                else:
                    study.tell(t.number, record.windowed_metric)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                pass  # a grid sampler's stop() outside optimize; the state is stored all the same
            lines.append(f"{name}: told its recorded outcome ({record.status}); its worker had stopped before")
            continue
        crashed = record is None or record.status == RUNNING
        crashes = int(t.user_attrs.get(CRASHES_ATTR, 0)) + int(crashed)
        holder = t.user_attrs.get(WORKER_ATTR) or {}
        host, pid = ((record.host, record.pid) if record is not None else
                     (holder.get("host", "?"), holder.get("pid", "?")))
        why = ("stopped by a signal (interrupted)" if record is not None and record.status == INTERRUPTED else
               f"its worker (pid {pid} on {host}) is gone")
        if crashes > MAX_RETRIES:
            reason = (f"its worker died {crashes} times while running it (a crash that kills the process, such as "
                      f"running out of memory); not retried again (at most {MAX_RETRIES} retries)")
            mark_failed(study, t.number, reason)
            if record is not None:
                record.status, record.failure_reason = FAILED, reason
                store.write(record)
            lines.append(f"{name}: {reason}")
            continue
        mark_failed(study, t.number, f"{why}; re-queued with its params and name to resume")
        system_attrs = {"failed_trial": t.number, **t.system_attrs}
        system_attrs["retry_history"] = [*t.system_attrs.get("retry_history", []), t.number]
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=t.params, distributions=t.distributions,
            user_attrs={**t.user_attrs, CRASHES_ATTR: crashes}, system_attrs=system_attrs))
        lines.append(f"{name}: {why}; re-queued" + (" (the copy resumes its last checkpoint)" if record else ""))
    return lines


def _spawned_worker(*args: Any) -> None:
    """A worker process's entry: ``worker`` (``startup.run_spawned_worker``: imports, parent death, signals)."""
    from reflect.startup import run_spawned_worker

    run_spawned_worker("reflect.ablation.execute", worker, *args)


def worker(path: str, overrides: tuple[str, ...], storage_url: Optional[str], runs_dir: str, n_trials: int,
           threads: Optional[int] = None, worker_index: int = 0, profile: Optional[str] = None) -> None:
    """Run trials of the sweep's study until it holds ``n_trials`` (complete, pruned, failed or running),
    study-wide: several workers share the budget through the storage, and none trains a configuration another has.

    A trial whose worker is gone (killed, interrupted, crashed) is failed and re-queued under its name first, so
    the next run resumes its checkpoint and its copy takes its slot; a trial whose configuration is invalid is a
    failed trial (recorded in the store), and the others go on.

    Args:
        path: the sweep file.
        overrides: ``key=value`` training overrides for every trial.
        storage_url: the Optuna storage (None: ``<runs_dir>/<sweep>/optuna.journal``).
        runs_dir: the results stores' root.
        n_trials: the study-wide budget.
        threads: torch threads for this worker (None: torch's default).
        worker_index: this worker's index (seeds its sampler stream apart from the others').
        profile: start from this profile instead of the file's ``base``.
    Raises:
        KeyboardInterrupt: on SIGINT/SIGTERM, after the running trial is recorded as interrupted.
    """
    from optuna.trial import TrialState

    from reflect.ablation.execute import run_trial
    from reflect.ablation.plan import PlannedTrial
    from reflect.ablation.queue import is_live
    from reflect.ablation.store import COMPLETE, FAILED, PRUNED, RUNNING, ResultsStore, TrialRecord
    from reflect.ablation.study import (WAIT_POLL_S, heartbeat_seconds, open_storage, reap_stale, record_heartbeat,
                                        study_lock, trial_heartbeat, uses_heartbeat)
    from reflect.config import config_hash, hash_identity

    if threads:
        import torch

        torch.set_num_threads(threads)
    spec, (base, layers, _) = load_sweep(path, overrides, profile)
    store = ResultsStore(Path(runs_dir) / spec.name)
    study = optuna.create_study(
        study_name=spec.name, storage=open_storage(storage_url, store.root / "optuna.journal"),
        direction="maximize" if spec.metric.mode == "max" else "minimize", sampler=make_sampler(spec, worker_index),
        pruner=make_pruner(spec), load_if_exists=True)
    if study.trials and spec.sampler.name != "grid":
        study.sampler = make_sampler(spec, worker_index, len(study.trials))

    def alive(record: TrialRecord) -> bool:
        if record.status != RUNNING or record.optuna_trial is None:
            return False
        trials = study.get_trials(deepcopy=False)
        frozen = trials[record.optuna_trial] if record.optuna_trial < len(trials) else None
        return frozen is not None and is_live(study, frozen, record)

    def objective(trial: optuna.Trial, lost: Any) -> float:
        # A re-queued copy of a dead worker's trial keeps the dead trial's name (a user attribute the copy
        # inherits), so it resumes that trial's checkpoint in the same work folder.
        arm = trial.user_attrs.get("reflect_arm") or f"t{trial.number:03d}"
        params: dict[str, Any] = {}
        try:
            for key, p in spec.space.items():
                params[key] = suggest(trial, key, p)
            cfg = load_train_config(base, overrides, extra_layers=layers + [("sweep trial", list(params.items()))])
        except ValueError as exc:  # a ConfigError (a value inside a range that no config takes): a failed trial
            detail = f"{exc.key}: {exc.message}" if isinstance(exc, ConfigError) and exc.key else str(exc)
            reason = f"invalid trial configuration: {detail}"
            trial.set_user_attr("reflect_arm", arm)
            store.write(TrialRecord(study=spec.name, arm=arm, seed=spec.seed, status=FAILED, failure_reason=reason,
                                    config_hash=hash_identity({"invalid_sweep_trial": params, "seed": spec.seed}),
                                    metric_name=spec.metric.name, metric_window=spec.metric.window,
                                    optuna_trial=trial.number, overrides=params))
            raise RuntimeError(reason) from None
        cfg = copy.deepcopy(cfg)
        cfg.seed = spec.seed
        trial.set_user_attr("reflect_arm", arm)
        p = PlannedTrial(arm=arm, seed=spec.seed, config=cfg, config_hash=config_hash(cfg), overrides=params)
        with study_lock(study, store.root / ".sweep.lock"):  # check and claim in one step: never trained twice
            same = [r for r in store.records() if r.config_hash == p.config_hash]
            done = next((r for r in same if r.status == COMPLETE), None)
            if done is not None:  # the same configuration already finished (e.g. before a restart)
                return float(done.windowed_metric)
            live = next((r for r in same if r.arm != arm and alive(r)), None)
            if live is not None:  # another worker is training this very configuration: never twice
                raise optuna.TrialPruned(f"duplicate of {live.arm}, which another worker is training")
            store.write(TrialRecord(study=spec.name, arm=p.arm, seed=p.seed, config_hash=p.config_hash,
                                    status=RUNNING, metric_name=spec.metric.name, metric_window=spec.metric.window,
                                    optuna_trial=trial.number, overrides=params))
        record = run_trial(spec, p, store, trial.number, callbacks=[StepPruningCallback(trial, spec.metric.name)],
                           claim_lost=lost)
        if record is None:
            raise RuntimeError("handed to another worker while this one was unreachable (its heartbeat went stale)")
        if record.status == PRUNED:
            raise optuna.TrialPruned(record.failure_reason)
        if record.status != COMPLETE:
            raise RuntimeError(record.failure_reason)  # Optuna records FAIL and goes on with the next trial
        return float(record.windowed_metric)

    # Failed trials count too (a sweep whose every trial fails must stop), and running ones (other workers'),
    # but not a dead worker's trial that was re-queued (by the database's stale-trial callback, or on the journal
    # by reap_dead_trials): its copy counts instead.
    budget_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)

    def spent() -> int:
        trials = study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        return sum(1 for t in trials if t.state in budget_states and t.number not in retried)

    # Why not study.optimize + MaxTrialsCallback: its check runs after a trial and before the next ask, so two
    # workers finishing together can both see n-1 and both ask (n+1 trials). Counting and asking under one lock
    # makes the study-wide budget exact. A re-queued trial (WAITING) is asked first, whatever the budget says.
    while True:
        with study_lock(study, store.root / ".sweep-budget.lock"):
            # A dead worker's trial (killed, interrupted, crashed): failed, and a copy queued with its params and
            # name. The database decides on a heartbeat storage; on the journal the trials' records do.
            reap_stale(study)
            for line in reap_dead_trials(study, store):
                console.print(f"sweep {spec.name}: {line}")
            requeued = bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            others = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            trial = None if not requeued and spent() >= n_trials else study.ask()
            if trial is not None:
                record_heartbeat(study, trial._trial_id)
                # who holds it, until its record says so (reap_dead_trials: a worker dead before writing one)
                trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid(),
                                                  "asked_at": time.time()})
        if trial is None:
            if uses_heartbeat(study) and others:
                time.sleep(min(heartbeat_seconds(study), WAIT_POLL_S))  # budget spent: wait in case a worker died
                continue
            break
        try:
            with trial_heartbeat(study, trial._trial_id) as lost:
                value = objective(trial, lost)
        except optuna.TrialPruned:
            _tell(study, trial, state=TrialState.PRUNED)
        except RuntimeError as exc:  # a failed trial: recorded in the store, FAIL in the study; the others go on
            _tell(study, trial, state=TrialState.FAIL, reason=str(exc))
        else:
            _tell(study, trial, value)


def _tell(study: optuna.Study, trial: optuna.Trial, value: Optional[float] = None,
          state: Optional[Any] = None, reason: Optional[str] = None) -> None:
    """Report a trial; one the database already failed as stale (its worker paused past the grace period) can no
    longer be told: the store holds the result, so that is a warning, not a crashed worker."""
    import warnings

    try:
        if reason is not None:
            trial.set_user_attr("reflect_failed_reason", reason)
        if state is None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except (ValueError, RuntimeError) as exc:  # ValueError, UpdateFinishedTrialError: another process finished it
        if (type(exc) is RuntimeError and "Study.stop" in str(exc)
                and study._storage.get_trial(trial._trial_id).state.is_finished()):
            return  # told all the same: the grid sampler calls study.stop() after its last point, outside optimize()
        warnings.warn(f"sweep trial {trial.number} could not be told its result ({exc}); the results store has it",
                      RuntimeWarning, stacklevel=2)


def export_wandb(spec: SweepSpec, base: str, out: Path) -> None:
    """Write the equivalent W&B sweep (for users who run ``wandb agent``): reflect.train takes key=value args.

    Args:
        spec: the sweep.
        base: the profile or config file the W&B runs start from.
        out: the YAML file to write (its folder is created).
    """
    method = {"tpe": "bayes", "cmaes": "bayes", "random": "random", "grid": "grid"}[spec.sampler.name]
    params: dict[str, Any] = {}
    for key, p in spec.space.items():
        if p.type == "categorical":
            params[key] = {"values": list(p.choices)}
        elif p.type == "int":
            params[key] = {"distribution": "q_log_uniform_values" if p.log else "int_uniform",
                           "min": int(p.low), "max": int(p.high), **({"q": int(p.step)} if p.log and p.step else {})}
        else:
            params[key] = {"distribution": "log_uniform_values" if p.log else "uniform", "min": p.low, "max": p.high}
    for key, value in spec.overrides.items():
        params[key] = {"value": value}
    params["seed"] = {"value": spec.seed}
    doc: dict[str, Any] = {
        "name": spec.name, "method": method,
        "metric": {"name": spec.metric.name, "goal": "maximize" if spec.metric.mode == "max" else "minimize"},
        "parameters": params,
        "command": ["${env}", "${interpreter}", "-m", "reflect.train", base, "${args_no_hyphens}"],
    }
    if spec.pruner.name == "hyperband":
        doc["early_terminate"] = {"type": "hyperband", "min_iter": spec.pruner.min_resource}
    header = ""
    if spec.pruner.name == "median":
        header = "# Optuna's median pruner has no W&B equivalent; W&B's hyperband early_terminate is the closest.\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(doc, sort_keys=False))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).
    Returns:
        The parsed options; ``overrides`` holds the ``key=value`` arguments, in any order among the options.
    """
    p = argparse.ArgumentParser(prog="python -m reflect.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--dry-run", action="store_true", help="validate the file and print the search space")
    p.add_argument("--profile", choices=PROFILES, help="start every trial from this profile instead of the file's base")
    p.add_argument("--storage", help="journal file path or database URL (default: runs/<sweep>/optuna.journal)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--export-wandb", metavar="OUT.yaml", help="write the equivalent W&B sweep config and exit")
    return p.parse_intermixed_args(argv)  # options and key=value in any order (cpython#59317)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m reflect.sweep``: validate, dry-run, export or run the sweep and print its trials.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).
    Returns:
        The exit status: 0 with at least one complete trial (or for a dry run or an export), 1 with none; a user
        error exits 2 with one line naming the file and key.
    """
    args = parse_args(argv)
    freeze_imports()
    with exit_on_user_error("reflect.sweep"):
        spec, (base, _, _) = load_sweep(args.file, tuple(args.overrides), args.profile)
        if args.export_wandb:
            export_wandb(spec, base, Path(args.export_wandb))
            console.print(f"wrote {args.export_wandb}")
            return 0
        table = Table(title=f"sweep {spec.name}: {spec.n_trials} trials, sampler {spec.sampler.name}, "
                            f"pruner {spec.pruner.name}, metric {spec.metric.name} ({spec.metric.mode})")
        for col in ("key", "type", "range / choices", "log"):
            table.add_column(col)
        for key, p in spec.space.items():
            rng = str(p.choices) if p.type == "categorical" else f"[{p.low}, {p.high}]"
            table.add_row(key, p.type, rng, str(p.log))
        console.print(table)
        if args.dry_run:
            console.print("dry run: the sweep and its search space are valid; nothing was trained.")
            return 0
        if args.workers <= 1:
            worker(args.file, tuple(args.overrides), args.storage, args.runs_dir, spec.n_trials, profile=args.profile)
        else:
            from reflect.ablation.machine import usable_cores
            from reflect.ablation.runner import forward_signals, worker_threads_env

            ctx = mp.get_context("spawn")
            threads = max(1, usable_cores() // args.workers)
            procs = [ctx.Process(target=_spawned_worker,
                                 args=(args.file, tuple(args.overrides), args.storage, args.runs_dir, spec.n_trials,
                                       threads, index, args.profile))
                     for index in range(args.workers)]
            with worker_threads_env(threads):
                for proc in procs:
                    proc.start()
            with forward_signals(procs) as received:
                for proc in procs:
                    proc.join()
            if received:  # the workers stopped at a step boundary and recorded it; now this process stops too
                raise KeyboardInterrupt(f"{received[0]} forwarded to the workers")
        return print_sweep_results(spec, args.runs_dir)


def print_sweep_results(spec: SweepSpec, runs_dir: str) -> int:
    """Print every trial of the sweep's store (status, windowed metric, params).

    Args:
        spec: the sweep.
        runs_dir: the results stores' root.
    Returns:
        0 if any trial is complete, else 1.
    """
    from reflect.ablation.store import ResultsStore

    records = sorted(ResultsStore(Path(runs_dir) / spec.name).records(), key=lambda r: r.arm)
    table = Table(title=f"{spec.name}: {spec.metric.name} (avg of last {spec.metric.window} evals)")
    for col in ("trial", "status", "value", "params"):
        table.add_column(col)
    for r in records:
        table.add_row(r.arm, r.status, "—" if r.windowed_metric is None else f"{r.windowed_metric:.3f}",
                      ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.overrides.items()))
    console.print(table)
    return 0 if any(r.status == "complete" for r in records) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:  # the collector resumes on every way out (reflect.startup)
        freeze_imports()
