"""What this machine cannot run of an ablation, found before anything trains.

A trial that fails after minutes for a reason knowable at the start (no CUDA for gsplat, LPIPS loss
weights absent) wastes the machine and hides the cause among failed records; ``reflect.ablate`` and
its ``--dry-run`` ask here first and stop with every reason at once.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from reflect.ablation.spec import Ablation
from reflect.losses.lpips_loader import lpips_weights_problem
from reflect.render import numba_available


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
    cuda = torch.cuda.is_available()
    found: Dict[str, List[str]] = {}
    for name, arm in ablation.arms.items():
        cfg = arm.config
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
        for reason in reasons:
            found.setdefault(reason, []).append(name)
    return [f"arm{'s' if len(arms) > 1 else ''} {', '.join(repr(a) for a in arms)}: {reason}"
            for reason, arms in found.items()]
