"""Gaussian-splatting rasterization with gsplat's interface and a choice of backend.

``rasterization(...)`` takes ``gsplat.rasterization``'s arguments (means [N,3], quats [N,4] wxyz,
activated scales [N,3] and opacities [N], colors [N,D] or [C,N,D], viewmats [C,4,4] OpenCV
world-to-camera, Ks [C,3,3]) and returns ``(render_colors [C,H,W,D(+1)], render_alphas [C,H,W,1],
meta)``. ``backend``: "gsplat" (CUDA kernels), "numba" (``numba_backend``: fused CPU kernels, needs
numba), "torch" (``torch_backend``: pure PyTorch, any device; the portable reference), or None
(the fastest that can run: gsplat when the inputs are on CUDA and gsplat imports; numba for CPU
inputs when numba imports; torch otherwise).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .gsplat_backend import rasterization_gsplat
from .numba_backend import composite_numba, numba_available, project_gaussians_numba, rasterization_numba
from .projection import project_gaussians
from .torch_backend import composite_sparse, rasterization_torch

BACKENDS = ("gsplat", "numba", "torch")
_IMPLEMENTATIONS = {"gsplat": rasterization_gsplat, "numba": rasterization_numba, "torch": rasterization_torch}


@functools.lru_cache(maxsize=1)
def _gsplat_imports() -> bool:
    """Whether ``import gsplat`` works (cheap: gsplat builds its CUDA extension on first use)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # gsplat's import can fail in many ways; any failure means "use torch"
        return False
    return True


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """The backend a call would use: the explicit choice, or the fastest that can run on ``device``."""
    if backend is None:
        if device.type == "cuda" and torch.cuda.is_available() and _gsplat_imports():
            return "gsplat"
        return "numba" if device.type == "cpu" and numba_available() else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; expected one of {BACKENDS} or None (auto)")
    return backend


def backend_stages(backend: str) -> Tuple[Any, Any]:
    """The (projector, compositor) pair of a CPU backend, for benchmarks that time the stages apart.

    Args: backend: "numba" or "torch". Returns: a function with ``project_gaussians``' signature and
    one with ``torch_backend.composite_sparse``'s.
    """
    stages = {"numba": (project_gaussians_numba, composite_numba), "torch": (project_gaussians, composite_sparse)}
    if backend not in stages:
        raise ValueError(f"backend_stages: expected one of {sorted(stages)}, got {backend!r}")
    return stages[backend]


def rasterization(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    backend: Optional[str] = None,
    **kwargs: Any,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Rasterize N Gaussians into C cameras (gsplat semantics); see the module docstring."""
    impl = _IMPLEMENTATIONS[resolve_backend(backend, means.device)]
    return impl(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, backgrounds=backgrounds,
        render_mode=render_mode, rasterize_mode=rasterize_mode, **kwargs,
    )


__all__ = ["BACKENDS", "backend_stages", "numba_available", "rasterization", "resolve_backend"]
