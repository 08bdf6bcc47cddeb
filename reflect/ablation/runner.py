"""Run an ablation: plan (arm × seed) trials, schedule them through Optuna, train, record.

The results store decides what is done (config hash + seed), so rerunning the
same command never redoes a complete trial, and a trial interrupted by a kill
resumes from its last checkpoint in its work folder.
"""
from __future__ import annotations

import fcntl
import math
import multiprocessing as mp
import os
import platform
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import optuna
from optuna.trial import TrialState
from pytorch_lightning.callbacks import Callback

from reflect.ablation.plan import PlannedTrial, plan_trials
from reflect.ablation.spec import Ablation, load_ablation
from reflect.code_version import git_state
from reflect.config import TrainConfig
from reflect.ablation.store import COMPLETE, FAILED, INTERRUPTED, PRUNED, RUNNING, ResultsStore, TrialRecord
from reflect.ablation.study import KEY_ATTR, describe_study, has_waiting, mark_failed, open_storage, open_study
from reflect.config_loading import to_plain_dict
from reflect.analysis.windows import windowed


@dataclass
class RunOptions:
    """Everything a worker process needs to rebuild the ablation on its own."""

    path: str
    overrides: tuple[str, ...] = ()
    seeds: Optional[tuple[int, ...]] = None
    profile: Optional[str] = None
    storage: Optional[str] = None
    runs_dir: str = "runs"
    threads: Optional[int] = None
    gpus: Optional[tuple[str, ...]] = None  # local workers take these devices in turn (--gpus 0,1)
    gpu: Optional[str] = None  # the device of one worker process

    def load(self) -> Ablation:
        return load_ablation(self.path, self.overrides, self.seeds, self.profile)


def store_for(ablation: Ablation, runs_dir: str | Path) -> ResultsStore:
    return ResultsStore(Path(runs_dir) / ablation.name)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sync_queue(ablation: Ablation, plan: list[PlannedTrial], store: ResultsStore, study: optuna.Study,
               known: Optional[set[str]] = None) -> int:
    """Enqueue every trial of ``plan`` that is neither complete nor alive somewhere; returns how many are pending.

    Waiting trials whose key is not in ``known`` (default: ``plan``'s keys) belong to an earlier plan and are
    failed off; a sequential design passes every trial it may run as ``known`` and one look's as ``plan``.
    """
    with _file_lock(store.root / ".queue.lock"):
        by_key: dict[str, list[optuna.trial.FrozenTrial]] = {}
        for t in study.get_trials(deepcopy=False):
            by_key.setdefault(t.user_attrs.get(KEY_ATTR, ""), []).append(t)
        planned = known if known is not None else {p.key for p in plan}
        for key, trials in by_key.items():
            if key not in planned:  # left over from an earlier plan (other seeds, renamed arms, new overrides)
                for t in trials:
                    if t.state == TrialState.WAITING:
                        mark_failed(study, t.number, "not in the current plan (the ablation changed)")
        pending = 0
        for p in plan:
            if store.complete(p.key):
                continue
            pending += 1
            queued = False
            for t in by_key.get(p.key, []):
                if t.state == TrialState.WAITING:
                    queued = True
                elif t.state == TrialState.RUNNING:
                    rec = store.get(p.key)
                    if rec is not None and rec.status == RUNNING and not rec.is_stale():
                        queued = True  # a live worker is on it
                    else:
                        mark_failed(study, t.number, "worker died (stale); re-enqueued")
            if not queued:
                study.enqueue_trial({"arm": p.arm, "seed": p.seed}, user_attrs={KEY_ATTR: p.key})
        return pending


class StoreHeartbeat(Callback):
    """Keeps the running record's progress and heartbeat fresh (live display, stale detection)."""

    def __init__(self, store: ResultsStore, record: TrialRecord, metric: str, every_s: float = 2.0):
        self.store, self.record, self.metric, self.every_s = store, record, metric, every_s
        self._last = 0.0

    def _beat(self, trainer, pl_module, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        last_eval = pl_module.eval_history[-1] if pl_module.eval_history else {}
        self.record.progress = {"step": int(trainer.global_step), "max_steps": int(trainer.max_steps),
                                "metric": last_eval.get(self.metric)}
        self.store.write(self.record)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self._beat(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._beat(trainer, pl_module, force=True)


def provenance() -> dict[str, Any]:
    """Where a number came from: code version, packages, machine."""
    commit, dirty = git_state()
    versions = {}
    for pkg in ("reflect", "torch", "gsplat", "pytorch-lightning", "optuna", "lpips", "wandb"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"git_commit": commit, "git_dirty": dirty, "packages": versions, "python": platform.python_version(),
            "host": socket.gethostname(), "device": device_kind()}


def device_kind() -> str:
    """The kind of device trials run on here (the status page forecasts trial-hours per kind)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def evaluation_protocol(cfg: TrainConfig, result) -> dict[str, Any]:
    """Pinned in every record: results are comparable only under the same protocol."""
    from reflect.data import dataset_fingerprint

    return {
        "resolution": list(result.resolution),
        "splits": list(cfg.eval.splits),
        "background": list(cfg.data.background),
        "eval_frame_ids": {s: v.get("frame_id", []) for s, v in result.per_frame.items()},
        "lpips_net": cfg.eval.lpips_net,
        "lpips": result.lpips_status,
        "lpips_reason": result.lpips_reason,
        "dataset_fingerprint": dataset_fingerprint(cfg.data),
        "render_backend": result.render_backend,  # what ran, not what was asked ("auto")
        "render_backend_requested": cfg.render.backend or "auto",
    }


def run_trial(ablation: Ablation, p: PlannedTrial, store: ResultsStore, optuna_number: Optional[int] = None,
              callbacks: Sequence[Callback] = ()) -> TrialRecord:
    """Train one (arm, seed), recording it; failures become FAILED records, never exceptions.

    ``ablation`` may be any study spec with ``name``, ``phase`` and ``metric`` (sweeps reuse this);
    an ``optuna.TrialPruned`` raised by a pruning callback makes the record PRUNED.
    """
    from reflect.tracking import make_wandb_logger
    from reflect.training import train

    existing = store.get(p.key)
    if existing is not None and existing.status == COMPLETE:
        return existing
    record = _running_record(ablation, p, optuna_number, config=to_plain_dict(p.config), overrides=p.overrides,
                             provenance=provenance())
    store.write(record)
    logger = None
    try:
        logger = make_wandb_logger(
            p.config.tracking, name=f"{p.arm}-s{p.seed}", save_dir=store.root,
            config={**record.config, "ablation": ablation.name, "arm": p.arm, "seed": p.seed,
                    "config_hash": p.config_hash, "phase": ablation.phase},
            group=ablation.name, job_type=p.arm, tags=[f"phase{ablation.phase}", ablation.name],
            run_id=f"{ablation.name}-{p.key}",
        )
        logger = _start_mirror(logger, record)
        with store.heartbeat(record):
            result = train(p.config, store.workdir(p.key), resume=True, logger=logger,
                           callbacks=[StoreHeartbeat(store, record, ablation.metric.name), *callbacks],
                           progress=False, code_version=record.code_version)
        value = windowed(result.eval_history, ablation.metric.name, ablation.metric.window)
        record.eval_history, record.train_history = result.eval_history, result.train_history
        record.per_frame, record.parameter_counts = result.per_frame, result.parameter_counts
        record.per_frame_history = result.per_frame_history
        record.renders = result.renders
        record.wall_time_s, record.steps, record.checkpoint = result.wall_time_s, result.steps, result.checkpoint
        record.protocol = evaluation_protocol(p.config, result)
        # the versions that trained these weights: a checkpoint resumed across a code change shows both, so the
        # report's "ran on several code versions" warning cannot be lost by deleting a record
        record.provenance = {**record.provenance, "trained_by": list(result.code_versions)}
        record.windowed_metric = value
        if value is None or not math.isfinite(value):
            record.status, record.failure_reason = FAILED, f"no finite {ablation.metric.name} was evaluated"
        else:
            record.status = COMPLETE
        if logger is not None:
            try:
                _mirror_final(logger, ablation, record)
            except Exception as exc:  # noqa: BLE001 - W&B is a mirror: its failure never changes the result
                record.wandb_error = f"{type(exc).__name__}: {exc}"
    except optuna.TrialPruned as exc:
        record.status, record.failure_reason = PRUNED, f"pruned: {exc}"
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: record it honestly, then stop like the user asked
        from reflect.lightning.interrupts import TrainingInterrupted

        record.status = INTERRUPTED
        record.failure_reason = (f"interrupted by {exc.signal_name} after step {exc.step}; its checkpoint is kept "
                                 "and the next run resumes it" if isinstance(exc, TrainingInterrupted) else
                                 "interrupted; the next run resumes it from its last periodic checkpoint")
        raise
    except Exception as exc:  # noqa: BLE001 - a trial's failure must not stop the others
        record.status = FAILED
        record.failure_reason = f"{type(exc).__name__}: {exc}"
        record.progress = {**record.progress, "traceback": traceback.format_exc(limit=8)}
    finally:
        store.write(record)
        if logger is not None:
            try:
                logger.experiment.finish(exit_code=0 if record.status == COMPLETE else 1)
            except Exception:  # noqa: BLE001 - the mirror must never lose the store's record
                pass
    return record


def _running_record(ablation: Ablation, p: PlannedTrial, optuna_number: Optional[int], **fields: Any) -> TrialRecord:
    """A RUNNING record of trial ``p``: the worker's claim (bare) or run_trial's (with config and provenance)."""
    return TrialRecord(study=ablation.name, arm=p.arm, seed=p.seed, config_hash=p.config_hash, status=RUNNING,
                       metric_name=ablation.metric.name, metric_window=ablation.metric.window,
                       optuna_trial=optuna_number, **fields)


def _start_mirror(logger, record: TrialRecord):
    """Start the W&B run before training: if W&B cannot start (bad settings, no disk, a server error), the
    trial goes on without its mirror and the record says why; the results store is what counts."""
    if logger is None:
        return None
    try:
        logger.experiment  # noqa: B018 - the property creates the run
        return logger
    except Exception as exc:  # noqa: BLE001 - any W&B failure costs only the mirror
        import warnings

        record.wandb_error = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"{record.key}: W&B run could not start ({type(exc).__name__}: {exc}); training without it",
                      RuntimeWarning, stacklevel=2)
        return None


def _mirror_final(logger, ablation: Ablation, record: TrialRecord) -> None:
    """Final per-frame metrics and the windowed metric into the W&B run."""
    import wandb

    run = logger.experiment
    run.summary[f"{ablation.metric.name}_avg{ablation.metric.window}"] = record.windowed_metric
    for split, frames in record.per_frame.items():
        cols = [c for c in frames if frames[c] is not None]
        rows = list(zip(*[frames[c] for c in cols]))
        run.log({f"{split}/per_frame": wandb.Table(columns=cols, data=[list(r) for r in rows])})


def worker_loop(opts: RunOptions) -> int:
    """Pop WAITING trials until none are left; returns how many this worker ran."""
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    ablation = opts.load()
    plan = {(p.arm, p.seed): p for p in plan_trials(ablation)}
    store = store_for(ablation, opts.runs_dir)
    study = open_study(ablation.name, open_storage(opts.storage, store.root / "optuna.journal"),
                       "maximize" if ablation.metric.mode == "max" else "minimize")
    by_key = {p.key: p for p in plan.values()}
    ran = 0
    while True:
        claimed = _claim_next(ablation, by_key, store, study)
        if claimed is None:
            break
        trial, p = claimed
        record = run_trial(ablation, p, store, trial.number)
        ran += 1
        _tell(study, trial, record)
    return ran


def _claim_next(ablation: Ablation, by_key: dict[str, PlannedTrial], store: ResultsStore,
                study: optuna.Study) -> Optional[tuple[optuna.Trial, PlannedTrial]]:
    """Pop the next queued trial of the current plan and write its RUNNING record, under the queue lock.

    Why under the lock: ``sync_queue`` (another process starting the same ablation) treats a RUNNING Optuna
    trial without a live RUNNING record as a dead worker's; claiming and recording in one locked step leaves
    it no window in which a trial that has just started looks dead.
    """
    with _file_lock(store.root / ".queue.lock"):
        while has_waiting(study):
            trial = study.ask()
            key = trial.user_attrs.get(KEY_ATTR)
            if key is None:
                # Not one of ours: ask() created a fresh trial because no waiting one was left.
                study.tell(trial, state=TrialState.FAIL)
                return None
            p = by_key.get(key)
            if p is None:  # queued by an earlier plan; checked before suggest_*, whose choices it may lack
                trial.set_user_attr("reflect_failed_reason", "not in the current plan (the ablation changed)")
                study.tell(trial, state=TrialState.FAIL)
                continue
            trial.suggest_categorical("arm", list(ablation.arms))
            trial.suggest_categorical("seed", list(ablation.seeds))
            existing = store.get(p.key)
            if existing is not None and existing.status == COMPLETE:  # enqueued twice; already done
                _tell(study, trial, existing)
                continue
            store.write(_running_record(ablation, p, trial.number))
            return trial, p
    return None


def _tell(study: optuna.Study, trial: optuna.Trial, record: TrialRecord) -> None:
    """Report a finished trial to Optuna. The store already holds the result, so a study that no longer takes
    it (another process failed the trial as stale in the meantime) is worth a warning, not a crash."""
    try:
        if record.status == COMPLETE:
            study.tell(trial, record.windowed_metric)
        else:
            trial.set_user_attr("reflect_failed_reason", record.failure_reason or "")
            study.tell(trial, state=TrialState.FAIL)
    except (ValueError, RuntimeError) as exc:
        import warnings

        warnings.warn(f"Optuna trial {trial.number} ({record.key}) could not be told its result ({exc}); "
                      "the results store has it", RuntimeWarning, stacklevel=2)


def _worker_entry(opts: RunOptions) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    if opts.gpu is not None:  # before anything initialises CUDA: this worker sees only its GPU (as cuda:0)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(opts.gpu)
    worker_loop(opts)


def set_aside(store: ResultsStore, key: str, with_work: bool) -> None:
    """Move a trial's record (and with ``with_work`` its work folder: checkpoints) under ``retried/``.

    Nothing is deleted: the old record keeps its curves and failure reason, the old checkpoint its weights;
    the trial then trains again from scratch and writes a fresh record.
    """
    stamp = int(time.time())
    kept = store.trials_dir / "retried" / f"{key}.{stamp}.json"
    kept.parent.mkdir(parents=True, exist_ok=True)
    if store.record_path(key).exists():
        os.replace(store.record_path(key), kept)
    work = store.workdir(key)
    if with_work and work.exists():
        target = work.parent / "retried" / f"{key}.{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, target)


def run_ablation(opts: RunOptions, workers: int = 1, display: Optional[Any] = None,
                 retry_failed: bool = False, rerun: bool = False) -> Ablation:
    """Run the ablation's seed design with ``workers`` processes (1 = in this process).

    A fixed design runs every (arm, seed) once. A sequential design runs look by look: the first look's seeds
    for every arm, then the analysis decides; only undecided arms (and the baseline) get the next look's seeds,
    and it stops when every arm is decided or the last look is taken. Trials already complete are never rerun.
    A failed trial counts as finished (and against its arm); ``retry_failed`` runs the plan's failed trials again
    first (after fixing what made them fail: retrying only some, after seeing the verdicts, would bias them).
    ``rerun`` trains every trial of the plan again from scratch (after a code change that affects training):
    records and checkpoints are set aside under ``retried/``, never deleted.
    """
    from reflect.analysis.verdicts import analyze

    ablation = opts.load()
    full_plan = plan_trials(ablation)
    by_arm_seed = {(p.arm, p.seed): p for p in full_plan}
    known = {p.key for p in full_plan}
    store = store_for(ablation, opts.runs_dir)
    study = open_study(ablation.name, open_storage(opts.storage, store.root / "optuna.journal"),
                       "maximize" if ablation.metric.mode == "max" else "minimize")
    check_plan(ablation, study, store, known)
    describe_study(study, ablation.metric.name, {"question": ablation.question, "phase": ablation.phase,
                                                 "arms": list(ablation.arms), "baseline": ablation.baseline,
                                                 "design": ablation.design.describe()})
    attempted: set[str] = set()
    if rerun:
        for p in full_plan:
            if store.get(p.key) is not None or store.workdir(p.key).exists():
                set_aside(store, p.key, with_work=True)
    elif retry_failed:
        for p in full_plan:  # kept (with its failure reason) under trials/retried/; the retry writes a fresh record
            if (rec := store.get(p.key)) is not None and rec.status in (FAILED, PRUNED):
                set_aside(store, p.key, with_work=False)
    with display or _null():
        while True:
            wanted = analyze(ablation, store.records()).trials_to_run()
            batch = [p for p in (by_arm_seed[(arm, seed)] for arm, seeds in wanted.items() for seed in seeds)
                     if p.key not in attempted and not _finished(store, p.key)]
            if not batch:
                break
            attempted.update(p.key for p in batch)
            sync_queue(ablation, batch, store, study, known=known)
            _run_workers(opts, workers)
    return ablation


PLAN_ATTR = "reflect_plan"


def check_plan(ablation: Ablation, study: optuna.Study, store: ResultsStore, known: set[str]) -> None:
    """Several machines on one study must run one plan: refuse to start while a study recorded with another plan
    has live trials.

    The plan is the hash of every trial key the design may run (arms, seeds, overrides, data); it is kept in the
    study's user attributes. A different plan with no live trial (an earlier run of a changed file) is adopted,
    and its queued trials are failed off by ``sync_queue`` as before.
    """
    import hashlib

    from reflect.config_loading import ConfigError

    plan_id = hashlib.sha256("\n".join(sorted(known)).encode()).hexdigest()[:16]
    previous = study.user_attrs.get(PLAN_ATTR)
    if previous and previous != plan_id:
        live = []  # any live trial: plans may overlap (other seeds), so its key alone cannot tell whose it is
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            key = t.user_attrs.get(KEY_ATTR)
            rec = store.get(key) if key else None
            if rec is not None and rec.status == RUNNING and not rec.is_stale():
                live.append(key)
        if live:
            raise ConfigError("--storage", f"study {ablation.name!r} is running another plan of this ablation "
                              f"(plan {previous}, live trials: {', '.join(sorted(live)[:3])}); this machine's plan "
                              f"is {plan_id}: start every machine with the same file, overrides and --seeds (and "
                              "the same data), or use another --storage")
    if previous != plan_id:
        study.set_user_attr(PLAN_ATTR, plan_id)


def _finished(store: ResultsStore, key: str) -> bool:
    """Complete, or failed/pruned: a failed trial is not silently retried (``--retry-failed`` does that)."""
    rec = store.get(key)
    return rec is not None and rec.status in (COMPLETE, FAILED, PRUNED)


def _run_workers(opts: RunOptions, workers: int) -> None:
    """Drain the queue with ``workers`` processes (1 = in this process)."""
    if workers <= 1:
        if opts.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(opts.gpus[0])
        worker_loop(opts)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    gpus = list(opts.gpus or ())
    procs = [ctx.Process(target=_worker_entry, args=(RunOptions(**{**opts.__dict__, "threads": threads,
                                                                    "gpu": gpus[i % len(gpus)] if gpus else None}),))
             for i in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    crashed = [p.exitcode for p in procs if p.exitcode != 0]
    if crashed:
        # Trials a crashed worker held stay RUNNING in the study; the next run re-enqueues them (stale).
        import warnings

        warnings.warn(f"{len(crashed)} of {workers} worker processes exited abnormally (exit codes {crashed}); "
                      "rerun the command to finish their trials", RuntimeWarning, stacklevel=2)


@contextmanager
def _null() -> Iterator[None]:
    yield


def trial_status(ablation: Ablation, store: ResultsStore) -> list[tuple[PlannedTrial, Optional[TrialRecord]]]:
    return [(p, store.get(p.key)) for p in plan_trials(ablation)]


__all__ = ["RunOptions", "PlannedTrial", "plan_trials", "run_ablation", "worker_loop", "run_trial", "trial_status",
           "store_for", "sync_queue", "FAILED"]
