"""A sweep worker: asks the study for trials under a study-wide budget, trains each, records and tells it.

Several workers (local processes, or machines sharing a database) share one study and one results store:
counting and asking happen under one lock so the budget is exact, a configuration that already finished is
returned from the store and one another worker is training is never trained twice, and a dead worker's trial
is taken back and re-queued first (``sweep_recovery``). ``_spawned_worker`` is the entry of a worker process
that ``python -m reflect.sweep --workers N`` spawns.
"""
from __future__ import annotations

import copy
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

import optuna
from rich.console import Console

from reflect.ablation.sweep_optuna import StepPruningCallback, make_pruner, make_sampler, suggest
from reflect.ablation.sweep_recovery import WORKER_ATTR, reap_dead_trials
from reflect.ablation.sweep_spec import load_sweep
from reflect.config import load_train_config
from reflect.config_loading import ConfigError

console = Console()


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
