"""Thin adapter around ``gsplat.rasterization`` (CUDA kernels); gsplat is imported lazily.

Why lazy: gsplat's CUDA extension is compiled/loaded on first import, which is slow and fails on
CPU-only machines; the torch backend must work without touching it.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import Tensor


def rasterization_gsplat(means: Tensor, *args: Any, **kwargs: Any) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Call ``gsplat.rasterization`` with the same arguments; ``meta["backend"] = "gsplat"``.

    ``packed`` defaults to False so ``meta`` has the dense [C, N, ...] layout the torch backend
    returns (radii [C, N, 2] int32, means2d [C, N, 2], depths [C, N]); images are identical either way.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("render backend 'gsplat' needs CUDA (gsplat's kernels are CUDA-only); use backend='torch'")
    if means.device.type != "cuda":
        raise RuntimeError(f"render backend 'gsplat' needs CUDA tensors, got means on {means.device}")
    try:
        import gsplat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(f"render backend 'gsplat' is unavailable: cannot import gsplat ({exc})") from exc
    kwargs.setdefault("packed", False)
    colors, alphas, meta = gsplat.rasterization(means, *args, **kwargs)
    meta["backend"] = "gsplat"
    return colors, alphas, meta
