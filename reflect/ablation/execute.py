"""Execute one trial: train it, and record everything a verdict will rest on.

``run_trial`` writes the RUNNING record, trains (resuming the trial's checkpoint), and turns the outcome
into a COMPLETE, FAILED, PRUNED or INTERRUPTED record with curves, per-frame metrics, provenance (the code
versions that trained the weights) and the evaluation protocol; W&B is a mirror whose failure never
changes the record. ``StoreHeartbeat`` keeps a live trial's record fresh for the queue's liveness checks.
"""
from __future__ import annotations

import math
import platform
import socket
import time
import traceback
from importlib import metadata
from typing import Any, Optional, Sequence

import optuna
import torch
from pytorch_lightning.callbacks import Callback

from reflect.ablation.machine import usable_cores
from reflect.ablation.plan import PlannedTrial
from reflect.ablation.spec import Ablation
from reflect.ablation.store import COMPLETE, FAILED, INTERRUPTED, PRUNED, RUNNING, ResultsStore, TrialRecord
from reflect.analysis.windows import windowed
from reflect.code_version import git_state
from reflect.config import TrainConfig
from reflect.config_loading import to_plain_dict
from reflect.model.avatar import head_model


class StoreHeartbeat(Callback):
    """Keeps the running record's progress and heartbeat fresh (live display, stale detection)."""

    def __init__(self, store: ResultsStore, record: TrialRecord, metric: str, every_s: float = 2.0,
                 claim_lost: Any = None):
        self.store, self.record, self.metric, self.every_s = store, record, metric, every_s
        self.claim_lost = claim_lost  # once set, the record is another worker's: never written from here again
        self._last = 0.0

    def _beat(self, trainer, pl_module, force: bool = False) -> None:
        now = time.time()
        if self.claim_lost is not None and self.claim_lost.is_set():
            return
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


class ClaimLost(Exception):
    """This worker's trial was handed to another worker (its heartbeat was judged stale): stop, write nothing."""


class StopIfClaimLost(Callback):
    """Stop training at the next step once ``lost`` is set (``reflect.ablation.study.trial_heartbeat``)."""

    def __init__(self, lost: Any):
        self.lost = lost

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if self.lost.is_set():
            raise ClaimLost(f"step {trainer.global_step}: the database handed this trial to another worker")


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
            "host": socket.gethostname(), "device": device_kind(), "threads": torch.get_num_threads(),
            "usable_cores": usable_cores()}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name: ``cpuinfo``'s first "model name" (Linux), else what ``platform`` knows, else "cpu"."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
                    break
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_kind() -> str:
    """The kind of device trials run on here; the status page forecasts trial-hours per kind.

    Returns: the GPU's name with CUDA; else ``"cpu: <model> (<T> thread(s))"`` with the threads this process
    trains with, because a CPU trial's time depends on them (a quick-profile trial: ~21 s on one thread of
    this project's 2-core machine, ~15 s on two), and ``--workers`` gives each local worker its share.
    """
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    threads = torch.get_num_threads()
    return f"cpu: {cpu_model()} ({threads} thread{'' if threads == 1 else 's'})"


def evaluation_protocol(cfg: TrainConfig, result) -> dict[str, Any]:
    """Pinned in every record: results are comparable only under the same protocol."""
    from reflect.data import dataset_fingerprint, evaluation_fingerprint

    return {
        "resolution": list(result.resolution),
        "splits": list(cfg.eval.splits),
        "background": list(cfg.data.background),
        "eval_frame_ids": {s: v.get("frame_id", []) for s, v in result.per_frame.items()},
        "lpips_net": cfg.eval.lpips_net,
        "lpips": result.lpips_status,
        "lpips_reason": result.lpips_reason,
        "dataset_fingerprint": dataset_fingerprint(cfg.data),  # everything the trial reads (training too)
        "eval_dataset_fingerprint": evaluation_fingerprint(cfg.data),  # what it is scored on
        "render_backend": result.render_backend,  # what ran, not what was asked ("auto")
        "render_backend_requested": cfg.render.backend or "auto",
        "ground_truth": result.ground_truth,
        "principal_point": cfg.data.principal_point,  # how the export's cy was read
        "head_model": head_model(cfg.model),
        "initialisation": result.initialisation,
    }


def run_trial(ablation: Ablation, p: PlannedTrial, store: ResultsStore, optuna_number: Optional[int] = None,
              callbacks: Sequence[Callback] = (), claim_lost: Any = None) -> Optional[TrialRecord]:
    """Train one (arm, seed), recording it; failures become FAILED records, never exceptions.

    ``ablation`` may be any study spec with ``name``, ``phase`` and ``metric`` (sweeps reuse this);
    an ``optuna.TrialPruned`` raised by a pruning callback makes the record PRUNED. ``claim_lost`` (the event
    ``reflect.ablation.study.trial_heartbeat`` yields) set means the database handed the trial to another
    worker: training stops at the next step, and the record is left to that worker (returns None).
    """
    from reflect.tracking import make_wandb_logger
    from reflect.training import train

    existing = store.get(p.key)
    if existing is not None and existing.status == COMPLETE:
        return existing
    record = running_record(ablation, p, optuna_number, config=to_plain_dict(p.config), overrides=p.overrides,
                             provenance=provenance())
    store.write(record)
    logger = None
    lost = False
    try:
        logger = make_wandb_logger(
            p.config.tracking, name=f"{p.arm}-s{p.seed}", save_dir=store.root,
            config={**record.config, "ablation": ablation.name, "arm": p.arm, "seed": p.seed,
                    "config_hash": p.config_hash, "phase": ablation.phase},
            group=ablation.name, job_type=p.arm, tags=[f"phase{ablation.phase}", ablation.name],
            run_id=f"{ablation.name}-{p.key}",
            resuming=(store.workdir(p.key) / "checkpoints" / "last.ckpt").is_file(),
        )
        logger = _start_mirror(logger, record)
        with store.heartbeat(record, claim_lost=claim_lost):
            result = train(p.config, store.workdir(p.key), resume=True, logger=logger,
                           callbacks=[StoreHeartbeat(store, record, ablation.metric.name, claim_lost=claim_lost),
                                      *callbacks, *([StopIfClaimLost(claim_lost)] if claim_lost is not None else [])],
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
        record.provenance = {**record.provenance, "trained_by": list(result.code_versions),
                             "resumed_from_step": result.resumed_from_step}
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
    except ClaimLost:
        lost = True  # the new owner writes the record; this worker's W&B run is closed as failed
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
        if not lost:
            store.write(record)
        if logger is not None:
            try:
                logger.experiment.finish(exit_code=0 if record.status == COMPLETE else 1)
            except Exception:  # noqa: BLE001 - the mirror must never lose the store's record
                pass
    return None if lost else record


def running_record(ablation: Ablation, p: PlannedTrial, optuna_number: Optional[int], **fields: Any) -> TrialRecord:
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
