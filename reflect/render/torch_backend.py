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

from .projection import ALPHA_THRESHOLD, Projection, project_gaussians

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


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """``x[idx]`` along dim 0; index_select is several times faster than advanced indexing on CPU."""
    return torch.index_select(x, 0, idx)


def _nonzero(mask: Tensor) -> Tensor:
    """Indices of the True entries of a 1-D mask (numpy's is ~5x faster than torch.nonzero on CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def _stable_argsort(keys: Tensor, bound: int) -> Tensor:
    """Stable argsort of non-negative integer keys < ``bound``.

    On CPU: numpy radix-sorts 16-bit keys, so keys < 2**32 take one or two 16-bit passes (LSD),
    ~3-10x faster than a comparison sort.
    """
    if keys.device.type != "cpu" or bound > 1 << 32:
        return torch.sort(keys, stable=True)[1]
    k = keys.numpy()
    order = np.argsort(k.astype(np.uint16), kind="stable")  # low 16 bits (astype wraps)
    if bound > 1 << 16:
        order = order[np.argsort((k[order] >> 16).astype(np.uint16), kind="stable")]
    return torch.from_numpy(order)


def _expand(counts: Tensor, total: int) -> Tuple[Tensor, Tensor]:
    """Enumerate ``counts[i]`` items per segment i: each item's segment and position in it."""
    dev = counts.device
    seg = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts, output_size=total)
    pos = torch.arange(total, device=dev) - _take(torch.cumsum(counts, 0) - counts, seg)
    return seg, pos


def _row_pointers(sorted_rows: Tensor, n_rows: int) -> Tensor:
    """CSR row pointers [n_rows + 1] of a sorted row-index array."""
    counts = torch.bincount(sorted_rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _segment_last(values: Tensor, crow: Tensor, empty: float) -> Tensor:
    """Last value of each CSR segment (``empty`` for empty segments)."""
    padded = torch.cat([values, values.new_full((1,), empty)])
    idx = torch.where(crow[1:] > crow[:-1], crow[1:] - 1, values.numel())
    return _take(padded, idx)


class _Pairs(NamedTuple):
    """The (Gaussian, pixel) pairs gsplat's kernel composites, sorted by (camera, pixel, depth).

    Pairs are enumerated per bounding-box row of each visible Gaussian ("rows"); the per-row
    quantities let the backward reduce pair gradients per row before touching Gaussians.
    """

    pix: Tensor  # [F] flat C*H*W pixel index
    crow: Tensor  # [C*H*W + 1] CSR row pointers over pixels
    row: Tensor  # [F] enumeration row of each pair
    u: Tensor  # [F] dx - the row's vertex dx*, where dx = mean.x - pixel centre.x
    raw: Tensor  # [F] opacity·exp(-sigma), before the 0.999 clamp
    alpha: Tensor  # [F]
    trans: Tensor  # [F] transmittance in front of the pair
    log_tfinal: Tensor  # [C*H*W] log of the final transmittance (float64)
    enum_rank: Tensor  # [F] rank of each pair in Gaussian-major enumeration order (for W^T)
    row_gauss: Tensor  # [R] index into ``flat`` of each row's Gaussian
    row_dy: Tensor  # [R] mean.y - pixel centre.y
    row_vertex: Tensor  # [R] dx* = -b·dy/a, where sigma is smallest along the row
    flat: Tensor  # [G] flat C*N index of each visible Gaussian, depth order per camera


def _contributing_pairs(
    means2d: Tensor, conics: Tensor, opacities: Tensor, valid: Tensor, depths: Tensor, width: int, height: int
) -> _Pairs:
    """Enumerate, per row of each visible Gaussian, the pixel span of its alpha >= 1/255 ellipse,
    then keep the pairs gsplat's kernel composites (alpha threshold, 1e-4 transmittance stop)."""
    C, N = valid.shape
    HW, n_pix = width * height, C * width * height
    dev, dtype = means2d.device, means2d.dtype
    # Visible Gaussians, camera-major and front-to-back within a camera.
    order = torch.argsort(torch.where(valid, depths, torch.full_like(depths, math.inf)), dim=1)
    take = torch.arange(N, device=dev)[None, :] < valid.sum(1, keepdim=True)
    cam = torch.arange(C, device=dev)[:, None].expand(C, N)[take]
    flat = cam * N + order[take]  # [G]
    # Per-Gaussian ellipse {sigma <= ln(255·opacity)} (float64, small margin; exact test below).
    per_g = torch.cat([means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1, 1)], 1)
    mx, my, a, b, c, op = _take(per_g, flat).double().unbind(1)
    s2 = 2.0 * torch.log(op * 255.0).clamp(min=0.0) * (1 + 1e-4) + 2e-4  # 2·sigma limit
    det = a * c - b * b
    ry = torch.sqrt(s2 * a / det)
    y0 = torch.ceil(my - ry - 0.5).clamp(0, height)
    ny = (torch.floor(my + ry - 0.5).clamp(-1, height - 1) - y0 + 1).clamp(min=0).long()
    row_g, row_i = _expand(ny, int(ny.sum()))
    # Rows: exact x-span of the ellipse in each pixel row.
    ga, gb, gc, gs2, gdet = (_take(t, row_g) for t in (a, b, c, s2, det))
    y = _take(y0, row_g) + row_i
    dy = _take(my, row_g) - (y + 0.5)
    disc = gs2 * ga - gdet * dy * dy
    half = torch.sqrt(disc.clamp(min=0)) / ga
    centre = _take(mx, row_g) - 0.5 + gb * dy / ga
    x0 = torch.ceil(centre - half - 1e-3).clamp(0, width)
    nx = torch.where(disc >= 0, torch.floor(centre + half + 1e-3).clamp(-1, width - 1) - x0 + 1, 0.0)
    nx = nx.clamp(min=0).long()
    row_pix = _take(cam, row_g) * HW + y.long() * width + x0.long()
    # Along a row sigma = k2·u² + kmin with u = dx - dx*, dx* = -b·dy/a the row's vertex, so
    # raw = amp·exp(-k2·u²) with amp = opacity·exp(-kmin): three gathers per pair.
    kmin = 0.5 * gdet * dy * dy / ga
    k2, u0 = (0.5 * ga).to(dtype), (centre - x0).to(dtype)  # u = u0 - column
    amp = (_take(op, row_g) * torch.exp(-kmin)).to(dtype)
    # Pairs, Gaussian-major (front to back), then the exact alpha test.
    prow, col = _expand(nx, int(nx.sum()))
    pix = _take(row_pix, prow) + col
    u = _take(u0, prow) - col.to(dtype)
    raw = _take(amp, prow) * torch.exp(-_take(k2, prow) * u * u)
    keep = _nonzero(raw >= ALPHA_THRESHOLD)  # sigma >= 0 holds by construction
    # Group by pixel; the stable sort keeps the front-to-back order inside each pixel.
    kpix = _take(pix, keep)
    srt = _stable_argsort(kpix, n_pix)
    sel, spix = _take(keep, srt), _take(kpix, srt)
    sraw = _take(raw, sel)
    # float64: the cumsum spans all pixels (and torch's float32 log1p is ~4x slower than float64's on CPU)
    logt = torch.log1p(-sraw.clamp(max=MAX_ALPHA).double())
    cs = torch.cumsum(logt, 0)
    before = _take(torch.cat([cs.new_zeros(1), cs]), _row_pointers(spix, n_pix)[:-1])
    incl = cs - _take(before, spix)  # log T behind each pair, within its pixel
    alive = _nonzero(incl > math.log(T_STOP))  # gsplat stops before next_T <= 1e-4
    final = _take(sel, alive)
    pix, raw, incl = _take(spix, alive), _take(sraw, alive), _take(incl, alive)
    crow = _row_pointers(pix, n_pix)
    # Rank of each pair in the Gaussian-major enumeration (counting sort over kept positions).
    kept_pos = _take(srt, alive)
    mark = torch.zeros(keep.numel(), dtype=torch.bool, device=dev).index_fill_(0, kept_pos, True)
    rank = torch.cumsum(mark, 0) - 1
    return _Pairs(
        pix=pix, crow=crow, row=_take(prow, final), u=_take(u, final), raw=raw,
        alpha=raw.clamp(max=MAX_ALPHA), trans=torch.exp((incl - _take(logt, alive)).to(dtype)),
        log_tfinal=_segment_last(incl, crow, 0.0), enum_rank=_take(rank, kept_pos),
        row_gauss=row_g, row_dy=dy.to(dtype), row_vertex=(-gb * dy / ga).to(dtype), flat=flat,
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
        fmat = feats.reshape(-1, feats.shape[-1])
        gauss_col = pr.flat % N if feats.dim() == 2 else pr.flat  # feature row of each visible Gaussian
        col = _take(_take(gauss_col, pr.row_gauss), pr.row)
        weights = pr.alpha * pr.trans
        image = _csr(pr.crow, col, weights.to(fmat.dtype), (n_pix, fmat.shape[0])) @ fmat
        t_final = torch.exp(pr.log_tfinal).to(means2d.dtype)
        ctx.save_for_backward(
            pr.pix, pr.crow, pr.row, pr.u, pr.raw, pr.alpha, pr.trans, weights, t_final, pr.enum_rank,
            pr.row_gauss, pr.row_dy, pr.row_vertex, pr.flat, gauss_col, col, conics, opacities, fmat,
        )
        ctx.shapes = (means2d.shape, feats.shape, n_pix)
        return image.reshape(C, height, width, -1), t_final.reshape(C, height, width, 1)

    @staticmethod
    def backward(ctx: Any, g_image: Tensor, g_trans: Tensor) -> Tuple[Optional[Tensor], ...]:  # type: ignore[override]
        with _single_thread(g_image.device):
            return _SparseComposite._backward(ctx, g_image, g_trans)

    @staticmethod
    def _backward(ctx: Any, g_image: Tensor, g_trans: Tensor) -> Tuple[Optional[Tensor], ...]:
        (pix, crow, row, u, raw, alpha, trans, weights, t_final, enum_rank, row_gauss, row_dy, vertex, flat,
         gauss_col, col, conics, opacities, fmat) = ctx.saved_tensors
        m_shape, f_shape, n_pix = ctx.shapes
        g_img = g_image.reshape(n_pix, -1).to(fmat.dtype).contiguous()
        g_feats = None
        if ctx.needs_input_grad[3]:  # dL/dF = W^T G, W^T as CSR in Gaussian-major pair order
            # enum_rank is a permutation, so scatter_ (~3x faster than index_copy_ on CPU) is exact here
            g_pix = torch.empty_like(pix).scatter_(0, enum_rank, pix)
            g_w = torch.empty_like(weights).scatter_(0, enum_rank, weights)
            g_row = _take(row_gauss, torch.empty_like(row).scatter_(0, enum_rank, row))
            w_t = _csr(_row_pointers(g_row, flat.numel()), g_pix, g_w.to(fmat.dtype), (flat.numel(), n_pix))
            g_feats = torch.zeros_like(fmat).index_add_(0, gauss_col, w_t @ g_img).reshape(f_shape)
        # dL/dw per pair: sampled dense-dense product <G[pix], F[col]>.
        pattern = _csr(crow, col, weights.to(fmat.dtype), (n_pix, fmat.shape[0]))
        g_w = torch.sparse.sampled_addmm(pattern, g_img, fmat.t(), beta=0.0).values().to(alpha.dtype)
        cs = torch.cumsum((g_w * weights).double(), 0)
        seg_end = _take(torch.cat([cs.new_zeros(1), cs]), crow[1:])
        after = (_take(seg_end, pix) - cs).to(alpha.dtype)  # sum over the pairs behind, same pixel
        tail = _take(g_trans.reshape(n_pix) * t_final, pix)
        g_alpha = trans * g_w - (after + tail) / (1.0 - alpha)
        g_sigma = torch.where(raw <= MAX_ALPHA, g_alpha * -raw, torch.zeros_like(g_alpha))
        # Reduce per row (shared Gaussian, dy and vertex v; dx = u + v): sums of g_sigma·u^k, k = 0..2.
        n_rows = row_gauss.numel()
        g_sigma_u = g_sigma * u
        t0, t1, t2 = (torch.zeros(n_rows, dtype=g.dtype, device=g.device).index_add_(0, row, g)
                      for g in (g_sigma, g_sigma_u, g_sigma_u * u))
        s0, s1, s2 = t0, t1 + vertex * t0, t2 + vertex * (2.0 * t1 + vertex * t0)  # sums of g_sigma·dx^k
        rflat = _take(flat, row_gauss)
        a, b, c = _take(conics.reshape(-1, 3), rflat).unbind(1)
        dy = row_dy
        per_row = torch.stack([
            a * s1 + b * dy * s0, c * dy * s0 + b * s1,  # means2d: dsigma/dm = (a dx + b dy, c dy + b dx)
            0.5 * s2, dy * s1, 0.5 * dy * dy * s0,  # conics: dsigma/d(a, b, c) = (dx²/2, dx dy, dy²/2)
            -s0 / _take(opacities.reshape(-1), rflat),  # opacity: d raw / d o = raw / o
        ], dim=1)
        n_flat = m_shape[0] * m_shape[1]
        grads = per_row.new_zeros(n_flat, 6).index_add_(0, rflat, per_row).reshape(m_shape[0], m_shape[1], 6)
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
    projector: Callable[..., Projection] = project_gaussians,
    **kwargs: Any,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """gsplat-compatible front end shared by the torch and numba backends and the dense reference.

    ``compositor`` and ``projector`` (``project_gaussians``'s signature) are the backend's stages;
    ``backend`` is the name reported in ``meta["backend"]``.
    """
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
    proj: Projection = projector(
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
