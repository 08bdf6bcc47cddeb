"""What this machine cannot run of an ablation, found before anything trains.

A trial that fails after minutes for a reason knowable at the start (no CUDA for gsplat, LPIPS loss
weights absent) wastes the machine and hides the cause among failed records; ``reflect.ablate`` and
its ``--dry-run`` ask here first and stop with every reason at once.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import torch

from reflect.ablation.spec import Ablation
from reflect.config import TrainConfig
from reflect.losses.lpips_loader import lpips_weights_problem
from reflect.render import numba_available


# ``--workers auto`` on a CPU-only machine: one worker per core up to this many (measured only up to 2 cores;
# every worker holds its own data and model, so more is left to an explicit --workers N).
MAX_AUTO_CPU_WORKERS = 4


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity (SLURM --cpus-per-task, taskset, a container's
    cpuset), not the machine's count, which would oversubscribe a job limited to a few cores."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def auto_workers(gpus: Optional[Sequence[str]] = None) -> tuple[int, str]:
    """How many local workers ``reflect.ablate --workers auto`` (the default) starts here, and why, in words.

    Args:
        gpus: the ``--gpus`` list, if given.
    Returns:
        (workers, reason). One worker per listed GPU; else one when CUDA is available (the trial trains there;
        ``--gpus`` or ``--workers`` for more); else one per CPU core, at most MAX_AUTO_CPU_WORKERS, each given
        cores / workers threads. Why per core on the CPU: a quick-profile trial gains ~1.25x from a second
        thread (its convolutions), so one-thread trials side by side use the cores better. Measured on 2
        cores: the Quickstart ablation took 241 s and 254 s with two one-thread workers, 325 s and 365 s with one
        two-thread worker.
    """
    if gpus:
        return len(gpus), f"one per --gpus entry ({len(gpus)})"
    if torch.cuda.is_available():
        return 1, "one on the GPU (--gpus 0,1,... for one per GPU)"
    cores = usable_cores()
    workers = max(1, min(cores, MAX_AUTO_CPU_WORKERS))
    threads = max(1, cores // workers)
    return workers, (f"{cores} usable CPU core{'s' * (cores > 1)}, no CUDA: {workers} worker{'s' * (workers > 1)}, "
                     f"{threads} thread{'s' * (threads > 1)} each")


def flame_problem(path: str) -> Optional[str]:
    """Why the FLAME model file cannot be used here (missing, unreadable, smplx absent), or None."""
    try:
        import smplx  # noqa: F401
    except ImportError:
        return "model.flame.model_path is set, but smplx (its skinning) does not import here: pip install smplx"
    from reflect.model.flame import FlameModelError, read_flame_model

    try:
        read_flame_model(path)
    except FlameModelError as exc:
        return str(exc)
    return None


def config_problems(cfg: TrainConfig) -> List[str]:
    """Reasons this machine cannot train ``cfg``, one line each (empty when it can): an explicit
    ``render.backend`` this machine lacks (gsplat without CUDA, numba not importable), ``trainer.accelerator``
    asking for a GPU without CUDA, a FLAME model file that cannot be read, an LPIPS *loss* without its backbone
    weights. Used for every arm of an ablation (``machine_problems``) and for a sweep's base config."""
    cuda = torch.cuda.is_available()
    reasons = []
    if cfg.render.backend == "gsplat" and not cuda:
        reasons.append("render.backend 'gsplat' needs CUDA, and this machine has none "
                       "(use render.backend=null to pick the fastest backend here, or run on a GPU machine)")
    if cfg.render.backend == "numba" and not numba_available():
        reasons.append("render.backend 'numba' needs the numba package, which does not import here "
                       "(pip install numba, or render.backend=torch)")
    if cfg.trainer.accelerator in ("gpu", "cuda") and not cuda:
        reasons.append(f"trainer.accelerator '{cfg.trainer.accelerator}' needs CUDA, and this machine has none")
    if cfg.model.flame.model_path:
        problem = flame_problem(str(cfg.model.flame.model_path))
        if problem:
            reasons.append(problem)
    if cfg.loss.lpips.enabled:
        problem = lpips_weights_problem(cfg.loss.lpips.net, cfg.loss.lpips.weights_path)
        if problem:
            reasons.append(f"the LPIPS loss is on, but {problem}")
    return reasons


def describe_data(cfg: TrainConfig) -> tuple[str, Optional[dict]]:
    """Check the data ``cfg`` trains and evaluates on without training, and say what it is.

    Args:
        cfg: a trial's config.
    Returns:
        (one line for the console, the loaded splits or None for the embedded synthetic head, which is generated
        on first use). A capture is read whole (every transforms file, npz and image is validated), so a missing
        folder or a corrupt image raises the data error naming it here, before anything trains.
    """
    from reflect.data import dataset_fingerprint, load_splits

    data = cfg.data
    if data.root is None and not data.sessions:
        return f"data: embedded synthetic head (generated on first use), fingerprint {dataset_fingerprint(data)}", None
    splits = load_splits(data, ["train", *cfg.eval.splits], mirror_display_camera=cfg.eval.mirror_display_camera,
                         mirror_eye_m=cfg.eval.mirror_eye_m)
    counts = ", ".join(f"{k}={len(v)} frames" for k, v in splits.items())
    line = (f"data: {counts} at {splits['train'].width}x{splits['train'].height}, "
            f"fingerprint {dataset_fingerprint(data)}")
    return line, splits


def machine_problems(ablation: Ablation) -> List[str]:
    """Reasons this machine cannot train the ablation's arms, one line each (arms sharing one are named together).

    Args:
        ablation: the loaded ablation (its arms' resolved training configs are checked).
    Returns:
        A list of messages, empty when every arm can run here. Checked: an explicit ``render.backend``
        this machine lacks (gsplat without CUDA, numba not importable), ``trainer.accelerator`` asking for
        a GPU without CUDA, a FLAME model file that cannot be read, and an LPIPS *loss* without its backbone
        weights (evaluation-only LPIPS is reported as unavailable instead, never a failure).
    """
    found: Dict[str, List[str]] = {}
    for name, arm in ablation.arms.items():
        for reason in config_problems(arm.config):
            found.setdefault(reason, []).append(name)
    return [f"arm{'s' if len(arms) > 1 else ''} {', '.join(repr(a) for a in arms)}: {reason}"
            for reason, arms in found.items()]
