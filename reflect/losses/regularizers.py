"""Regularisers on the Gaussians themselves (latents, deformation offsets, scales)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

# Distance-matrix entries per chunk: bounds knn_graph's memory to ~64 MB (float32).
_CHUNK_ENTRIES = 1 << 24


@torch.no_grad()
def knn_graph(points: Tensor, k: int, chunk_size: Optional[int] = None) -> Tensor:
    """Indices ``[N, k]`` (long) of each point's ``k`` nearest other points, nearest first.

    Chunked ``cdist`` + ``topk`` keeps memory at ``chunk_size × N`` instead of N².
    A point is never its own neighbour, even when duplicates sit at distance 0.
    """
    n = points.shape[0]
    if points.ndim != 2 or not 1 <= k < n:
        raise ValueError(f"knn_graph: expected points [N, D] with 1 <= k < N, got shape "
                         f"{tuple(points.shape)} and k={k}")
    chunk = chunk_size or max(1, _CHUNK_ENTRIES // n)
    pts = points.float()
    out = torch.empty(n, k, dtype=torch.long, device=points.device)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        d = torch.cdist(pts[lo:hi], pts)
        rows = torch.arange(hi - lo, device=points.device)
        d[rows, rows + lo] = float("inf")
        out[lo:hi] = d.topk(k, dim=1, largest=False).indices
    return out


def laplacian_smoothness(latents: Tensor, knn_index: Tensor) -> Tensor:
    """Mean over Gaussians of ``||f_i − mean_{j∈kNN(i)} f_j||²`` (NPGA's latent Laplacian).

    Neighbouring Gaussians in canonical space should carry similar features, so
    the decoder sees smooth feature images instead of per-splat noise.
    """
    neighbour_mean = latents[knn_index].mean(dim=1)  # [N, F]
    return (latents - neighbour_mean).pow(2).sum(dim=-1).mean()


def offset_threshold(offsets: Tensor, threshold: float) -> Tensor:
    """Mean of ``relu(||offset|| − threshold)`` over all Gaussians (and batch items).

    GaussianAvatars' position loss: deformations up to ``threshold`` are free,
    larger ones are penalised linearly, so the deformation cannot drift far
    from the canonical head.
    """
    return F.relu(offsets.norm(dim=-1) - threshold).mean()


def scale_threshold(scales: Tensor, threshold: float) -> Tensor:
    """Mean over Gaussians of ``||relu(scale − threshold)||`` (the per-axis excess, 2-norm).

    GaussianAvatars' scale loss on activated scales: it stops a few huge splats
    from covering detail the decoder should produce; scales below the threshold
    are free.
    """
    return F.relu(scales - threshold).norm(dim=-1).mean()
