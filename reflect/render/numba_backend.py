"""The numba render backend: gsplat's rasterization on the CPU with fused, compiled kernels.

Same arguments, outputs and rules as the torch backend (``torch_backend.rasterize_with`` is the
shared front end); only the projection and the compositing run in ``numba_kernels`` with
hand-written backwards, checked against autograd through the torch backend and against the dense
reference. The torch backend stays the portable reference and the fallback where numba is not
installed. Parts numba does not cover fall back to the torch projection, so no input is refused:
explicit ``covars``, and ``viewmats``/``Ks`` that require gradients.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .projection import Projection, project_gaussians
from .torch_backend import rasterize_with


@functools.lru_cache(maxsize=1)
def numba_available() -> bool:
    """Whether numba imports: a declared dependency, but a missing or broken install falls back to torch."""
    try:
        import numba  # noqa: F401
    except Exception:  # a broken numba/llvmlite install means "use the torch backend"
        return False
    return True


def _kernels():  # noqa: ANN202 - the module, imported (and its kernels loaded from numba's cache) on first use
    if not numba_available():
        raise RuntimeError("render backend 'numba' needs the numba package: pip install numba (or use backend='torch')")
    from . import numba_kernels
    return numba_kernels


def _np(x: Tensor) -> np.ndarray:
    """A float64 (or integer/bool) numpy view or copy of a CPU tensor, detached."""
    x = x.detach()
    if x.is_floating_point():
        x = x.double()
    return x.contiguous().numpy()


class _Projection(torch.autograd.Function):
    """EWA projection (``numba_kernels.project_forward``) with its analytic backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor, Ks: Tensor,
        width: int, height: int, near: float, far: float, eps2d: float, radius_clip: float, antialiased: bool,
    ) -> Tuple[Tensor, ...]:
        k = _kernels()
        arrays = [_np(t) for t in (means, quats, scales, opacities, viewmats, Ks)]
        means2d, conics, depths, radii, opac, valid = k.project_forward(
            *arrays, width, height, near, far, eps2d, radius_clip, antialiased
        )
        ctx.arrays = arrays
        ctx.settings = (width, height, near, far, eps2d, antialiased)
        ctx.dtypes = [t.dtype for t in (means, quats, scales, opacities)]
        dtype = means.dtype
        radii_t, valid_t = torch.from_numpy(radii), torch.from_numpy(valid)
        ctx.mark_non_differentiable(radii_t, valid_t)
        return (torch.from_numpy(means2d).to(dtype), torch.from_numpy(conics).to(dtype),
                torch.from_numpy(depths).to(dtype), torch.from_numpy(opac).to(dtype), radii_t, valid_t)

    @staticmethod
    def backward(ctx: Any, g_means2d: Tensor, g_conics: Tensor, g_depths: Tensor, g_opac: Tensor,  # type: ignore[override]
                 _g_radii: Any, _g_valid: Any) -> Tuple[Optional[Tensor], ...]:
        width, height, near, far, eps2d, antialiased = ctx.settings
        grads = _kernels().project_backward(
            *ctx.arrays, width, height, near, far, eps2d, antialiased,
            _np(g_means2d), _np(g_conics), _np(g_depths), _np(g_opac),
        )
        out = [torch.from_numpy(g).to(dt) if need else None
               for g, dt, need in zip(grads, ctx.dtypes, ctx.needs_input_grad[:4])]
        return (*out, None, None, None, None, None, None, None, None, None)


def project_gaussians_numba(
    means: Tensor, quats: Optional[Tensor], scales: Optional[Tensor], viewmats: Tensor, Ks: Tensor,
    width: int, height: int, *, opacities: Optional[Tensor] = None, covars: Optional[Tensor] = None,
    near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3, radius_clip: float = 0.0,
    antialiased: bool = False,
) -> Projection:
    """``projection.project_gaussians`` with the fused kernel; same arguments and result.

    Falls back to the torch projection for what the kernel does not differentiate: explicit
    ``covars``, no ``opacities``, or ``viewmats``/``Ks`` that require gradients.
    """
    if covars is not None or opacities is None or viewmats.requires_grad or Ks.requires_grad:
        return project_gaussians(
            means, quats, scales, viewmats, Ks, width, height, opacities=opacities, covars=covars,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, radius_clip=radius_clip, antialiased=antialiased,
        )
    means2d, conics, depths, opac, radii, valid = _Projection.apply(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        float(near_plane), float(far_plane), float(eps2d), float(radius_clip), bool(antialiased),
    )
    return Projection(means2d, conics, depths, radii, opac, valid)


def _follow_torch_threads() -> int:
    """Set numba's thread count to torch's (capped at numba's pool) for this thread; return it.

    Why: a process that limits torch's threads (a local worker of ``--workers``, given its share of the
    cores) must not have numba start one thread per core behind its back.
    """
    import numba

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if threads > 1:  # one thread: the serial kernels run, and numba's parallel runtime is never started
        numba.set_num_threads(threads)
    return threads


def _bands(height: int) -> int:
    """Row bands per camera: one per thread (each band is one thread's work), at least 8 rows each."""
    return max(1, min(_follow_torch_threads(), height // 8))


class _Composite(torch.autograd.Function):
    """Front-to-back compositing (``numba_kernels.composite_forward``) with its reverse-walk backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, valid: Tensor,
        depths: Tensor, width: int, height: int,
    ) -> Tuple[Tensor, Tensor]:
        k = _kernels()
        C = valid.shape[0]
        order = torch.argsort(torch.where(valid, depths, torch.full_like(depths, math.inf)), dim=1)
        n_visible = valid.sum(1)
        feats3 = feats[None] if feats.dim() == 2 else feats
        arrays = [_np(t) for t in (means2d, conics, opacities, feats3)]
        save = any(ctx.needs_input_grad[:4])
        n_bands = _bands(height)
        forward = k.composite_forward if n_bands > 1 else k.composite_forward_serial
        image, trans, *pairs = forward(
            *arrays, order.numpy(), n_visible.numpy(), width, height, save, n_bands
        )
        if save:
            ctx.arrays = arrays
            ctx.pairs = pairs
            ctx.layout = (width, n_bands)
            ctx.feats_shape, ctx.dtypes = feats.shape, [t.dtype for t in (means2d, conics, opacities, feats)]
        return (torch.from_numpy(image).to(feats.dtype).reshape(C, height, width, -1),
                torch.from_numpy(trans).to(means2d.dtype).reshape(C, height, width, 1))

    @staticmethod
    def backward(ctx: Any, g_image: Tensor, g_trans: Tensor) -> Tuple[Optional[Tensor], ...]:  # type: ignore[override]
        C = g_image.shape[0]
        need_feats = ctx.needs_input_grad[3]
        k = _kernels()
        backward = k.composite_backward if _follow_torch_threads() > 1 else k.composite_backward_serial
        g_means2d, g_conics, g_opac, g_feats = backward(
            *ctx.arrays, *ctx.layout, *ctx.pairs,
            _np(g_image.reshape(C, -1, g_image.shape[-1])), _np(g_trans.reshape(C, -1)), need_feats,
        )
        out = [torch.from_numpy(g).to(dt) if need else None
               for g, dt, need in zip((g_means2d, g_conics, g_opac), ctx.dtypes, ctx.needs_input_grad[:3])]
        g_f = None
        if need_feats:
            g_f = torch.from_numpy(g_feats.sum(0) if len(ctx.feats_shape) == 2 else g_feats).to(ctx.dtypes[3])
        return (*out, g_f, None, None, None, None)


def composite_numba(
    means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, valid: Tensor,
    depths: Tensor, width: int, height: int,
) -> Tuple[Tensor, Tensor]:
    """Same contract as ``torch_backend.composite_sparse``: features [C,H,W,D] (no background), final T [C,H,W,1]."""
    return _Composite.apply(means2d, conics, opacities, feats, valid, depths.detach(), width, height)


def rasterization_numba(*args: Any, **kwargs: Any) -> Tuple[Tensor, Tensor, dict]:
    """``gsplat.rasterization`` semantics on the CPU with the fused kernels; differentiable like the torch backend."""
    means = args[0] if args else kwargs["means"]
    if means.device.type != "cpu":
        raise ValueError(f"render backend 'numba' runs on the CPU; the inputs are on {means.device} "
                         "(use backend='gsplat' on CUDA, or None to choose)")
    _kernels()
    return rasterize_with(composite_numba, "numba", *args, projector=project_gaussians_numba, **kwargs)
