"""Gaussian-splatting rasterization with gsplat's interface and a choice of backend.

``rasterization(...)`` takes ``gsplat.rasterization``'s arguments (means [N,3], quats [N,4] wxyz,
activated scales [N,3] and opacities [N], colors [N,D] or [C,N,D], viewmats [C,4,4] OpenCV
world-to-camera, Ks [C,3,3]) and returns ``(render_colors [C,H,W,D(+1)], render_alphas [C,H,W,1],
meta)``. ``backend``: "gsplat" (CUDA kernels), "torch" (``torch_backend``, any device), or None
(gsplat when CUDA is available, gsplat imports and the inputs are on CUDA; torch otherwise).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .gsplat_backend import rasterization_gsplat
from .torch_backend import rasterization_torch

BACKENDS = ("gsplat", "torch")


@functools.lru_cache(maxsize=1)
def _gsplat_imports() -> bool:
    """Whether ``import gsplat`` works (cheap: gsplat builds its CUDA extension on first use)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # gsplat's import can fail in many ways; any failure means "use torch"
        return False
    return True


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """The backend a call would use: explicit choice, or gsplat only where it can run."""
    if backend is None:
        usable = device.type == "cuda" and torch.cuda.is_available() and _gsplat_imports()
        return "gsplat" if usable else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; expected one of {BACKENDS} or None (auto)")
    return backend


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
    impl = rasterization_gsplat if resolve_backend(backend, means.device) == "gsplat" else rasterization_torch
    return impl(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, backgrounds=backgrounds,
        render_mode=render_mode, rasterize_mode=rasterize_mode, **kwargs,
    )


__all__ = ["BACKENDS", "rasterization", "resolve_backend"]
