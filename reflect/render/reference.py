"""Brute-force dense reference rasterizer: every pixel × every Gaussian. Tests and benches only.

Why: it states gsplat's compositing rules in the most literal way (alpha for all pairs, depth
sort, threshold, cumulative product, 1e-4 stop), so the fast sparse backend can be checked
against it, values and gradients. O(C·H·W·N) time; memory is bounded by pixel chunks.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .projection import ALPHA_THRESHOLD
from .torch_backend import MAX_ALPHA, T_STOP, rasterize_with

CHUNK_PAIRS = 1 << 24  # pixel×Gaussian pairs per chunk; above one chunk, chunks are checkpointed


def _composite_chunk(pxy: Tensor, m: Tensor, con: Tensor, op: Tensor, f: Tensor) -> Tuple[Tensor, Tensor]:
    """Composite depth-sorted Gaussians (m, con, op, f) at pixel centres pxy [P, 2]."""
    dx = m[None, :, 0] - pxy[:, None, 0]
    dy = m[None, :, 1] - pxy[:, None, 1]
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    alpha = (op * torch.exp(-sigma)).clamp(max=MAX_ALPHA)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    with torch.no_grad():  # stop before the Gaussian that would bring T to <= 1e-4
        alive = torch.cumprod(1.0 - alpha, dim=1) > T_STOP
    alpha = torch.where(alive, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), one_minus[:, :-1]], dim=1), dim=1)
    return (alpha * trans) @ f, trans[:, -1:] * one_minus[:, -1:]


def composite_dense(
    means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, valid: Tensor,
    depths: Tensor, width: int, height: int,
) -> Tuple[Tensor, Tensor]:
    """Same contract as ``torch_backend.composite_sparse``, computed densely per camera."""
    C, N = valid.shape
    D = feats.shape[-1]
    dev, dtype = means2d.device, means2d.dtype
    ys, xs = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij")
    pxy = torch.stack([xs, ys], dim=-1).reshape(-1, 2).to(dtype) + 0.5
    images, transes = [], []
    for c in range(C):
        idx = torch.argsort(torch.where(valid[c], depths[c], torch.full_like(depths[c], math.inf)))
        idx = idx[: int(valid[c].sum())]
        f = (feats if feats.dim() == 2 else feats[c])[idx]
        if idx.numel() == 0:
            images.append(torch.zeros(height * width, D, dtype=feats.dtype, device=dev))
            transes.append(torch.ones(height * width, 1, dtype=dtype, device=dev))
            continue
        args = (means2d[c, idx], conics[c, idx], opacities[c, idx], f)
        step = max(1, CHUNK_PAIRS // idx.numel())
        chunks = [pxy[i : i + step] for i in range(0, pxy.shape[0], step)]
        if len(chunks) > 1 and torch.is_grad_enabled():
            outs = [checkpoint(_composite_chunk, p, *args, use_reentrant=False) for p in chunks]
        else:
            outs = [_composite_chunk(p, *args) for p in chunks]
        images.append(torch.cat([o[0] for o in outs]))
        transes.append(torch.cat([o[1] for o in outs]))
    return (torch.stack(images).reshape(C, height, width, D), torch.stack(transes).reshape(C, height, width, 1))


def rasterization_reference(*args: Any, **kwargs: Any) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Dense-reference version of ``reflect.render.rasterization`` (same arguments and outputs)."""
    return rasterize_with(composite_dense, "reference", *args, **kwargs)
