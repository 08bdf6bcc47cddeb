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

from reflect.ablation.spec import DecisionSpec, MetricSpec
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
    decision: DecisionSpec = field(default_factory=DecisionSpec)

    def validate(self) -> None:
        if not self.space:
            raise ValueError("space: expected at least one parameter to search")
        if self.n_trials < 1:
            raise ValueError(f"n_trials: expected a positive integer, got {self.n_trials}")
        if self.sampler.name == "grid" and any(p.type == "float" and p.step is None for p in self.space.values()):
            raise ValueError("space: the grid sampler needs categorical parameters or numeric ones with a step")


def load_sweep(path: str | Path, overrides: Sequence[str] = (), profile: Optional[str] = None) -> tuple[SweepSpec, Any]:
    """Validate the sweep file and that every space key is a training-config key.

    Args:
        path: the sweep file.
        overrides: ``key=value`` training overrides for every trial.
        profile: start from this profile instead of the file's ``base`` (``--profile``).
    Returns:
        (spec with relative ranges resolved to absolute ones, (base, override layers, base config)).
    """
    path = Path(path)
    spec: SweepSpec = merge_into_schema(SweepSpec, [(str(path), read_yaml_mapping(path))])
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
    probe = []
    for key, p in spec.space.items():
        probe.append((key, p.choices[0] if p.type == "categorical" else (int(p.low) if p.type == "int" else p.low)))
    try:
        load_train_config(base, overrides, extra_layers=layers + [(f"{path}: space", probe)])
    except ConfigError as exc:
        raise ConfigError(str(path), exc.message, f"space.{exc.key}" if exc.key else "space") from None
    return spec, (base, layers, base_cfg)


def make_sampler(spec: SweepSpec, worker_index: int = 0, resumed_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler for one worker: each worker's stream is seeded apart (``seed + worker_index``), or two
    workers with one seed would suggest the same values in pairs; a restart on a study that already has trials
    starts a new stream (else it would repeat its first suggestions, each a cached result)."""
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
            n = int(round((p.high - p.low) / p.step)) + 1
            grid[key] = [type(p.low)(p.low + i * p.step) if p.type == "float" else int(p.low + i * p.step) for i in range(n)]
    return optuna.samplers.GridSampler(grid, seed=s.seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, key: str, p: ParamSpec) -> Any:
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


def _spawned_worker(*args: Any) -> None:
    """A worker process's entry: ``worker`` (``startup.run_spawned_worker``: imports, parent death, signals)."""
    from reflect.startup import run_spawned_worker

    run_spawned_worker("reflect.ablation.execute", worker, *args)


def worker(path: str, overrides: tuple[str, ...], storage_url: Optional[str], runs_dir: str, n_trials: int,
           threads: Optional[int] = None, worker_index: int = 0, profile: Optional[str] = None) -> None:
    """Run trials of the sweep's study until it holds ``n_trials`` (complete, pruned or running), study-wide:
    several workers share the budget through the storage, and none trains a configuration another has."""
    from optuna.trial import TrialState

    from reflect.ablation.execute import run_trial
    from reflect.ablation.plan import PlannedTrial
    from reflect.ablation.queue import is_live
    from reflect.ablation.store import COMPLETE, PRUNED, RUNNING, ResultsStore, TrialRecord
    from reflect.ablation.study import (WAIT_POLL_S, heartbeat_seconds, open_storage, reap_stale, record_heartbeat,
                                        study_lock, trial_heartbeat, uses_heartbeat)
    from reflect.config import config_hash

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
        params = {k: suggest(trial, k, p) for k, p in spec.space.items()}
        cfg = load_train_config(base, overrides, extra_layers=layers + [("sweep trial", list(params.items()))])
        cfg = copy.deepcopy(cfg)
        cfg.seed = spec.seed
        # A re-queued copy of a dead worker's trial keeps the dead trial's name (a user attribute the copy
        # inherits), so it resumes that trial's checkpoint in the same work folder.
        arm = trial.user_attrs.get("reflect_arm") or f"t{trial.number:03d}"
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
    # but not a dead worker's trial that was re-queued: its copy counts instead.
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
            reap_stale(study)  # a dead worker's trial: failed, and a copy queued with its params and name
            requeued = bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            others = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            trial = None if not requeued and spent() >= n_trials else study.ask()
            if trial is not None:
                record_heartbeat(study, trial._trial_id)
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
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as exc:
        warnings.warn(f"sweep trial {trial.number} could not be told its result ({exc}); the results store has it",
                      RuntimeWarning, stacklevel=2)


def export_wandb(spec: SweepSpec, base: str, out: Path) -> None:
    """The equivalent W&B sweep (for users who run ``wandb agent``): reflect.train takes key=value args."""
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
