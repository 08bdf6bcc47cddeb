"""The project's vectorised, differentiable PyTorch Gaussian rasterizer (CPU and any device).

Why hand-written: no library provides a CPU-capable, autograd-differentiable 3D Gaussian
rasterizer with gsplat's interface (gsplat's kernels are CUDA-only and its ``_torch_impl``
rasterizer still needs them for tile intersection), yet training must run on CPU-only machines.

Design: instead of a per-pixel loop, enumerate only the (Gaussian, pixel) pairs whose alpha can
reach 1/255 (exact ellipse bounding boxes), decide in a no-grad pass which pairs gsplat's kernel
composites (alpha threshold, front-to-back order, 1e-4 transmittance stop), then recompute just
those pairs in a custom autograd Function: segmented exclusive transmittance via a float64
cumsum of log(1 - alpha), weights alpha·T, and a CSR sparse × dense product into the image.
The result equals the dense reference (``reflect.render.reference``) up to float rounding.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .projection import ALPHA_THRESHOLD, Projection, alpha_extent, project_gaussians

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
T_STOP = 1e-4  # gsplat: a pixel stops before the Gaussian whose next_T would be <= 1e-4
MAX_ALPHA = 0.999

# gsplat kwargs that only change speed/memory, never the rendered values.
_NO_EFFECT_KWARGS = ("packed", "tile_size", "channel_chunk", "segmented")
# gsplat kwargs whose non-default values change results and are not implemented here.
_UNSUPPORTED_KWARGS: Dict[str, Any] = {
    "sh_degree": None, "sparse_grad": False, "absgrad": False, "distributed": False,
    "camera_model": "pinhole", "with_ut": False, "with_eval3d": False, "radial_coeffs": None,
    "tangential_coeffs": None, "thin_prism_coeffs": None, "ftheta_coeffs": None, "viewmats_rs": None,
}

# (means2d, conics, opacities, feats, valid, depths, width, height) -> (image [C,H,W,D], T [C,H,W,1])
Compositor = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int, int], Tuple[Tensor, Tensor]]


def check_torch_kwargs(kwargs: Dict[str, Any]) -> Tuple[float, Optional[Tensor]]:
    """Validate gsplat-only kwargs; return (radius_clip, covars). Unsupported ones raise, never ignored."""
    kwargs = dict(kwargs)
    radius_clip = float(kwargs.pop("radius_clip", 0.0))
    covars = kwargs.pop("covars", None)
    for name in _NO_EFFECT_KWARGS:
        kwargs.pop(name, None)
    rolling = kwargs.pop("rolling_shutter", None)
    if rolling is not None and getattr(rolling, "name", rolling) != "GLOBAL":
        raise NotImplementedError("torch render backend: rolling_shutter is not supported; use backend='gsplat'")
    for name, default in _UNSUPPORTED_KWARGS.items():
        if name in kwargs:
            value = kwargs.pop(name)
            if (value is not None) if default is None else (value != default):
                raise NotImplementedError(
                    f"torch render backend: {name}={value!r} is not supported (only {default!r}); "
                    "use backend='gsplat' on CUDA"
                )
    if kwargs:
        raise TypeError(f"rasterization() got unexpected keyword arguments: {sorted(kwargs)}")
    return radius_clip, covars


def _stable_argsort(keys: Tensor) -> Tensor:
    """Stable argsort; on CPU numpy's is ~30x faster than torch.sort(stable=True) on these keys."""
    if keys.device.type == "cpu":
        small = keys.numpy().astype(np.int32 if keys.numel() and int(keys.max()) < 2**31 else np.int64)
        return torch.from_numpy(np.argsort(small, kind="stable"))
    return torch.sort(keys, stable=True)[1]


def _row_pointers(sorted_rows: Tensor, n_rows: int) -> Tensor:
    """CSR row pointers [n_rows + 1] of a sorted row-index array."""
    counts = torch.bincount(sorted_rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """``x[idx]`` along dim 0; index_select is several times faster than advanced indexing on CPU."""
    return torch.index_select(x, 0, idx)


class _Pairs(NamedTuple):
    """Composited (Gaussian, pixel) pairs sorted by (camera, pixel, depth)."""

    pix: Tensor  # flat C*H*W pixel index
    crow: Tensor  # CSR row pointers over pixels [C*H*W + 1]
    owner: Tensor  # index into ``flat`` (visible Gaussians, depth order)
    flat: Tensor  # [G] flat C*N index of each visible Gaussian
    dx: Tensor  # mean - pixel centre
    dy: Tensor
    raw: Tensor  # opacity·exp(-sigma), before the 0.999 clamp
    alpha: Tensor
    logt: Tensor  # log(1 - alpha), float64
    trans: Tensor  # transmittance in front of the pair
    enum_pos: Tensor  # position in the Gaussian-major enumeration (recovers that order)
    n_enum: int


def _contributing_pairs(
    means2d: Tensor, conics: Tensor, opacities: Tensor, valid: Tensor, depths: Tensor, width: int, height: int
) -> _Pairs:
    """Enumerate pixels in each visible Gaussian's exact alpha>=1/255 ellipse bounding box, then
    keep the pairs gsplat's kernel composites (alpha threshold, 1e-4 transmittance stop)."""
    C, N = valid.shape
    HW = width * height
    dev = means2d.device
    # Visible Gaussians, camera-major and front-to-back within a camera.
    order = torch.argsort(torch.where(valid, depths, torch.full_like(depths, math.inf)), dim=1)
    take = torch.arange(N, device=dev)[None, :] < valid.sum(1, keepdim=True)
    cam = torch.arange(C, device=dev)[:, None].expand(C, N)[take]
    flat = cam * N + order[take]  # [G] index into C*N
    m = _take(means2d.reshape(-1, 2), flat)
    con = _take(conics.reshape(-1, 3), flat)
    op = _take(opacities.reshape(-1), flat)
    ext = alpha_extent(op) * (1 + 1e-4) + 1e-4  # tiny safety margin; the exact test is below
    det = con[:, 0] * con[:, 2] - con[:, 1] ** 2
    rx = ext * torch.sqrt((con[:, 2] / det).clamp(min=0))
    ry = ext * torch.sqrt((con[:, 0] / det).clamp(min=0))
    x0 = torch.ceil(m[:, 0] - rx - 0.5).clamp(0, width)
    x1 = torch.floor(m[:, 0] + rx - 0.5).clamp(-1, width - 1)
    y0 = torch.ceil(m[:, 1] - ry - 0.5).clamp(0, height)
    y1 = torch.floor(m[:, 1] + ry - 0.5).clamp(-1, height - 1)
    nx = (x1 - x0 + 1).clamp(min=0).long()
    counts = nx * (y1 - y0 + 1).clamp(min=0).long()
    total = int(counts.sum())
    owner = torch.repeat_interleave(torch.arange(flat.numel(), device=dev), counts, output_size=total)
    local = torch.arange(total, device=dev) - _take(torch.cumsum(counts, 0) - counts, owner)
    row = torch.div(local, _take(nx, owner), rounding_mode="floor")
    colr = local - row * _take(nx, owner)
    pix = _take(cam * HW + y0.long() * width + x0.long(), owner) + row * width + colr
    dx = _take(m[:, 0] - x0 - 0.5, owner) - colr.to(m.dtype)
    dy = _take(m[:, 1] - y0 - 0.5, owner) - row.to(m.dtype)
    sigma = 0.5 * (_take(con[:, 0], owner) * dx * dx + _take(con[:, 2], owner) * dy * dy)
    sigma = sigma + _take(con[:, 1], owner) * dx * dy
    raw = _take(op, owner) * torch.exp(-sigma)
    keep = torch.nonzero((sigma >= 0) & (raw >= ALPHA_THRESHOLD)).squeeze(1)
    # Group by pixel; the stable sort keeps the front-to-back order inside each pixel.
    perm = _take(keep, _stable_argsort(_take(pix, keep)))
    spix, sraw = _take(pix, perm), _take(raw, perm)
    logt = torch.log1p(-sraw.clamp(max=MAX_ALPHA).double())  # float64: the cumsum spans all pixels
    excl = torch.cumsum(logt, 0) - logt
    excl = excl - _take(excl, _take(_row_pointers(spix, C * HW), spix))
    alive = torch.nonzero(excl + logt > math.log(T_STOP)).squeeze(1)  # next T stays above 1e-4
    final = _take(perm, alive)
    pix, raw = _take(spix, alive), _take(sraw, alive)
    return _Pairs(
        pix=pix, crow=_row_pointers(pix, C * HW), owner=_take(owner, final), flat=flat,
        dx=_take(dx, final), dy=_take(dy, final), raw=raw, alpha=raw.clamp(max=MAX_ALPHA),
        logt=_take(logt, alive), trans=torch.exp(_take(excl, alive)).to(means2d.dtype),
        enum_pos=final, n_enum=total,
    )


@contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """Run the rasterizer single-threaded on CPU.

    Why: its ~100 ops each touch only ~1e3-1e5 elements and are memory-bound; OpenMP's per-op
    fork/join costs more than a second core saves, and stalls badly (~10x) when cores are shared.
    """
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _csr(crow: Tensor, cols: Tensor, values: Tensor, shape: Tuple[int, int]) -> Tensor:
    """A CSR matrix (torch flags CSR as beta; it is used here only for SpMM/SDDMM, which are stable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


class _SparseComposite(torch.autograd.Function):
    """Composite the contributing pairs with a hand-written backward.

    Why: autograd over the per-pair ops and gathers is ~5x slower on CPU; here the feature
    reductions are CSR sparse-dense products (weights × features) and the rest is O(pairs).
    Gradients (per pixel, pairs front to back, w = alpha·T, Tf = final transmittance):
    dL/dalpha_p = T_p·dL/dw_p - (sum_{q>p} w_q·dL/dw_q + Tf·dL/dTf) / (1 - alpha_p).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor,
        valid: Tensor, depths: Tensor, width: int, height: int,
    ) -> Tuple[Tensor, Tensor]:
        with _single_thread(means2d.device):
            return _SparseComposite._forward(ctx, means2d, conics, opacities, feats, valid, depths, width, height)

    @staticmethod
    def _forward(
        ctx: Any, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor,
        valid: Tensor, depths: Tensor, width: int, height: int,
    ) -> Tuple[Tensor, Tensor]:
        C, N = valid.shape
        n_pix = C * width * height
        pr = _contributing_pairs(means2d, conics, opacities, valid, depths, width, height)
        gflat = _take(pr.flat, pr.owner)
        fmat = feats.reshape(-1, feats.shape[-1])
        col = gflat % N if feats.dim() == 2 else gflat
        weights = pr.alpha * pr.trans
        image = _csr(pr.crow, col, weights.to(fmat.dtype), (n_pix, fmat.shape[0])) @ fmat
        log_tf = torch.zeros(n_pix, dtype=torch.float64, device=feats.device).index_add_(0, pr.pix, pr.logt)
        t_final = torch.exp(log_tf).to(means2d.dtype)
        ctx.save_for_backward(
            pr.pix, pr.crow, pr.owner, pr.flat, gflat, col, pr.dx, pr.dy, pr.raw, pr.alpha, pr.trans,
            weights, t_final, pr.enum_pos, conics, opacities, fmat,
        )
        ctx.meta = (means2d.shape, feats.shape, n_pix, pr.n_enum)
        return image.reshape(C, height, width, -1), t_final.reshape(C, height, width, 1)

    @staticmethod
    def backward(ctx: Any, g_image: Tensor, g_trans: Tensor) -> Tuple[Optional[Tensor], ...]:  # type: ignore[override]
        with _single_thread(g_image.device):
            return _SparseComposite._backward(ctx, g_image, g_trans)

    @staticmethod
    def _backward(ctx: Any, g_image: Tensor, g_trans: Tensor) -> Tuple[Optional[Tensor], ...]:
        (pix, crow, owner, flat, gflat, col, dx, dy, raw, alpha, trans, weights, t_final, enum_pos,
         conics, opacities, fmat) = ctx.saved_tensors
        m_shape, f_shape, n_pix, n_enum = ctx.meta
        g_img = g_image.reshape(n_pix, -1).contiguous()
        # Features: dL/dF = W^T G, as a CSR product over pairs in Gaussian-major order.
        mark = torch.full((n_enum,), -1, dtype=torch.long, device=pix.device)
        mark[enum_pos] = torch.arange(pix.numel(), device=pix.device)
        by_owner = _take(mark, torch.nonzero(mark >= 0).squeeze(1))
        n_vis = flat.numel()
        w_t = _csr(
            _row_pointers(_take(owner, by_owner), n_vis), _take(pix, by_owner),
            _take(weights, by_owner).to(g_img.dtype), (n_vis, n_pix),
        )
        f_col = flat % fmat.shape[0] if fmat.shape[0] < m_shape[0] * m_shape[1] else flat
        g_feats = torch.zeros_like(fmat).index_add_(0, f_col, (w_t @ g_img).to(fmat.dtype)).reshape(f_shape)
        # dL/dw per pair: sampled dense-dense product <G[pix], F[col]>.
        pattern = _csr(crow, col, weights.to(g_img.dtype), (n_pix, fmat.shape[0]))
        g_w = torch.sparse.sampled_addmm(pattern, g_img, fmat.to(g_img.dtype).t(), beta=0.0).values()
        g_w = g_w.to(alpha.dtype)
        s = (g_w * weights).double()
        incl = torch.cumsum(s, 0)
        seg_total = torch.zeros(n_pix, dtype=s.dtype, device=s.device).index_add_(0, pix, s)
        after = (_take(seg_total, pix) - incl + _take(incl - s, _take(crow, pix))).to(alpha.dtype)
        tail = _take(g_trans.reshape(n_pix) * t_final, pix)
        g_alpha = trans * g_w - (after + tail) / (1.0 - alpha)
        g_raw = torch.where(raw <= MAX_ALPHA, g_alpha, torch.zeros_like(g_alpha))
        g_sigma = -g_raw * raw
        con = _take(conics.reshape(-1, 3), gflat)
        per_pair = (
            g_sigma * (con[:, 0] * dx + con[:, 1] * dy),
            g_sigma * (con[:, 2] * dy + con[:, 1] * dx),
            0.5 * g_sigma * dx * dx,
            g_sigma * dx * dy,
            0.5 * g_sigma * dy * dy,
            g_raw * raw / _take(opacities.reshape(-1), gflat),
        )
        n_flat = m_shape[0] * m_shape[1]
        grads = torch.stack([torch.zeros(n_flat, dtype=g.dtype, device=g.device).index_add_(0, gflat, g)
                             for g in per_pair], dim=-1).reshape(m_shape[0], m_shape[1], 6)
        return grads[..., :2], grads[..., 2:5], grads[..., 5], g_feats, None, None, None, None


def composite_sparse(
    means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, valid: Tensor,
    depths: Tensor, width: int, height: int,
) -> Tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing over contributing (Gaussian, pixel) pairs only.

    ``feats`` is [N, D] (shared by all cameras) or [C, N, D]. Returns the composited features
    [C, H, W, D] (no background) and the final transmittance [C, H, W, 1].
    """
    return _SparseComposite.apply(means2d, conics, opacities, feats, valid, depths.detach(), width, height)


def rasterize_with(
    compositor: Compositor,
    backend: str,
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int,
    near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
    backgrounds: Optional[Tensor] = None, render_mode: str = "RGB", rasterize_mode: str = "classic",
    **kwargs: Any,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """gsplat-compatible front end shared by the torch backend and the dense reference."""
    radius_clip, covars = check_torch_kwargs(kwargs)
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    N, C = means.shape[0], viewmats.shape[0]
    if means.shape != (N, 3) or opacities.shape != (N,) or viewmats.shape != (C, 4, 4) or Ks.shape != (C, 3, 3):
        raise ValueError(
            "expected means [N,3], opacities [N], viewmats [C,4,4], Ks [C,3,3] (no batch dims); got "
            f"{tuple(means.shape)}, {tuple(opacities.shape)}, {tuple(viewmats.shape)}, {tuple(Ks.shape)}"
        )
    if covars is None and (quats.shape != (N, 4) or scales.shape != (N, 3)):
        raise ValueError(f"expected quats [N,4] and scales [N,3], got {tuple(quats.shape)}, {tuple(scales.shape)}")
    if colors.shape[:-1] not in ((N,), (C, N)):
        raise ValueError(f"expected colors [N,D] or [C,N,D], got {tuple(colors.shape)}")
    proj: Projection = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, opacities=opacities, covars=covars,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, radius_clip=radius_clip,
        antialiased=rasterize_mode == "antialiased",
    )
    feats, bg = colors, backgrounds
    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([colors.expand(C, N, -1), proj.depths[..., None]], dim=-1)
        if bg is not None:
            bg = torch.cat([bg, bg.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        feats, bg = proj.depths[..., None], None  # gsplat uses a zero background for depth
    image, trans = compositor(
        proj.means2d, proj.conics, proj.opacities, feats, proj.valid, proj.depths, width, height
    )
    alphas = 1.0 - trans
    if bg is not None:
        image = image + trans * bg[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        image = torch.cat([image[..., :-1], image[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    meta = {
        "means2d": proj.means2d, "radii": proj.radii, "depths": proj.depths, "conics": proj.conics,
        "opacities": proj.opacities, "width": width, "height": height, "n_cameras": C, "backend": backend,
    }
    return image, alphas, meta


def rasterization_torch(*args: Any, **kwargs: Any) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """``gsplat.rasterization`` semantics on any device, differentiable w.r.t. all float inputs."""
    with _single_thread(args[0].device if args else kwargs["means"].device):
        return rasterize_with(composite_sparse, "torch", *args, **kwargs)
