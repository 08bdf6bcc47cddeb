"""The sweep's Optuna side: its sampler and pruner, each trial's suggested values, and step-wise pruning.

``make_sampler`` and ``make_pruner`` turn a validated ``SweepSpec`` into Optuna's own objects (TPE, random,
CMA-ES or grid; median, Hyperband or none), seeding each worker's sampler stream apart; ``suggest`` asks a
trial for one space parameter's value; ``StepPruningCallback`` reports the metric to Optuna at each
evaluation's global step, so the pruner can stop a trial inside the trainer's one long epoch.
"""
from __future__ import annotations

from typing import Any

import optuna
from pytorch_lightning.callbacks import Callback

from reflect.ablation.sweep_spec import ParamSpec, SweepSpec, range_steps

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
            n = range_steps(p.low, p.high, step)  # never a value past high (round() gave 400 for 100..360 by 100)
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
