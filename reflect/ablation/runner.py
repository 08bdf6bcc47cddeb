"""Run an ablation: plan (arm × seed) trials, schedule them through Optuna, train, record.

The results store decides what is done (config hash + seed), so rerunning the
same command never redoes a complete trial, and a trial interrupted by a kill
resumes from its last checkpoint in its work folder. This module orchestrates:
the look-by-look loop and the worker processes; ``queue`` holds the study's queue and
``execute`` runs and records one trial.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from reflect.ablation.execute import run_trial
from reflect.ablation.plan import PlannedTrial, plan_trials
from reflect.ablation.queue import check_plan, claim_next, live_keys, sync_queue, tell, wait_for_others
from reflect.ablation.spec import Ablation, load_ablation
from reflect.ablation.store import COMPLETE, FAILED, PRUNED, ResultsStore, TrialRecord
from reflect.ablation.study import describe_study, open_storage, open_study, trial_heartbeat


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
    waiting_since: list[float] = []
    while True:
        claimed = claim_next(ablation, by_key, store, study)
        if claimed is None:
            if wait_for_others(study, store, by_key, waiting_since):
                continue  # others' trials still run: a dead worker's comes back queued once its beat is stale
            break
        trial, p = claimed
        with trial_heartbeat(study, trial._trial_id) as lost:
            record = run_trial(ablation, p, store, trial.number, claim_lost=lost)
        if record is None:
            continue  # handed to another worker while this one was unreachable: its result is theirs
        ran += 1
        tell(study, trial, record)
    return ran


def _worker_entry(opts: RunOptions) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    if opts.gpu is not None:  # before anything initialises CUDA: this worker sees only its GPU (as cuda:0)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(opts.gpu)
    from reflect.startup import run_spawned_worker

    run_spawned_worker("reflect.training", worker_loop, opts)

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
    records and checkpoints are set aside under ``retried/``, never deleted; a trial live on another worker is
    left alone. Every ``--rerun`` starts over, so resume an interrupted rerun without the flag.
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
        live = live_keys(study, store, known)
        for p in full_plan:
            if p.key in live:
                continue  # another worker is training it right now: never pull its folder from under it
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
            _run_workers(opts, min(workers, len(batch)))  # a short look: fewer workers, more threads each
    return ablation


def _finished(store: ResultsStore, key: str) -> bool:
    """Complete, or failed/pruned: a failed trial is not silently retried (``--retry-failed`` does that)."""
    rec = store.get(key)
    return rec is not None and rec.status in (COMPLETE, FAILED, PRUNED)


@contextmanager
def worker_threads_env(threads: int) -> Iterator[None]:
    """The environment of spawned worker processes with ``threads`` threads each (they read it at start).

    numba sizes its thread pool when it starts (default: every core); without this, W workers would hold W pools
    of every core, and a 1-thread frame ran ~50x slower with two such workers on two cores (measured).
    """
    previous = os.environ.get("NUMBA_NUM_THREADS")
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = previous


def _run_workers(opts: RunOptions, workers: int) -> None:
    """Drain the queue with ``workers`` processes (1 = in this process)."""
    if workers <= 1:
        if opts.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(opts.gpus[0])
        worker_loop(opts)
        return
    from reflect.ablation.machine import usable_cores

    threads = max(1, usable_cores() // workers)
    ctx = mp.get_context("spawn")
    gpus = list(opts.gpus or ())
    procs = [ctx.Process(target=_worker_entry, args=(RunOptions(**{**opts.__dict__, "threads": threads,
                                                                    "gpu": gpus[i % len(gpus)] if gpus else None}),))
             for i in range(workers)]
    with worker_threads_env(threads):
        for proc in procs:
            proc.start()
    with forward_signals(procs) as received:
        for proc in procs:
            proc.join()
    if received:  # the workers stopped at a step boundary and recorded it; now the caller stops too
        raise KeyboardInterrupt(f"{received[0]} forwarded to the workers")
    crashed = [p.exitcode for p in procs if p.exitcode not in (0, 130)]
    if crashed:
        # Trials a crashed worker held stay RUNNING in the study; the next run re-enqueues them (stale).
        import warnings

        warnings.warn(f"{len(crashed)} of {workers} worker processes exited abnormally (exit codes {crashed}); "
                      "rerun the command to finish their trials", RuntimeWarning, stacklevel=2)


@contextmanager
def forward_signals(procs: list) -> Iterator[list[str]]:
    """While the workers run: SIGINT or SIGTERM sent to this process alone (``kill``, a scheduler, an IDE's stop)
    goes on to every worker as SIGTERM, which stops its trial at a step boundary with a checkpoint.

    SIGTERM, not SIGINT: after Ctrl-C the terminal has already sent SIGINT to the whole group, and a worker takes
    a second SIGINT as "stop now, without the step's checkpoint". Yields the names of the signals received. A
    signal this process was started ignoring (nohup) stays ignored; outside the main thread nothing is installed.
    """
    import signal
    import threading

    received: list[str] = []
    previous: dict[int, Any] = {}

    def forward(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, forward)
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def _null() -> Iterator[None]:
    yield


def trial_status(ablation: Ablation, store: ResultsStore) -> list[tuple[PlannedTrial, Optional[TrialRecord]]]:
    return [(p, store.get(p.key)) for p in plan_trials(ablation)]


__all__ = ["RunOptions", "forward_signals", "run_ablation", "set_aside", "store_for", "trial_status", "worker_loop"]
