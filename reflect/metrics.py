"""Evaluation metrics, one value per image (``[B]``), never averaged away here.

Per-frame values let reports compare trials frame by frame and find the
frames a change hurts. Images are ``[B, 3, H, W]`` in [0, 1]; ``mask``
(``[B, 1, H, W]``, e.g. the alpha matte) weights pixels, so a binary mask
restricts a metric to the masked pixels. An image with an empty mask gets NaN.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from reflect.losses.lpips_loader import LpipsUnavailable, load_lpips, lpips_distance


def _per_image_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean of ``x`` ``[B, C, H, W]`` per image, mask-weighted when a mask is given."""
    if mask is None:
        return x.flatten(1).mean(dim=1)
    w = mask.to(x.dtype).expand_as(x)
    return (x * w).flatten(1).sum(dim=1) / w.flatten(1).sum(dim=1)


def psnr(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Per-image PSNR in dB (data range 1); with ``mask``, the MSE covers the masked pixels only.

    Hand-written: torchmetrics' PSNR has no masked form, and one formula keeps
    the masked and full-image numbers comparable.
    """
    mse = _per_image_mean((pred.float() - target.float()) ** 2, mask)
    return -10.0 * torch.log10(mse)


def ssim(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Per-image SSIM (torchmetrics: Gaussian window σ = 1.5, data range 1).

    With ``mask``, the mean of the SSIM map over the masked pixels.
    """
    full, masked = ssim_full_and_masked(pred, target, mask)
    return full if mask is None else masked


def ssim_full_and_masked(pred: Tensor, target: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-image SSIM over the whole image and over ``mask`` (None: the whole image), from one SSIM map.

    Evaluation reports both; one torchmetrics call gives the per-image value and the full map.
    """
    pred, target = pred.float(), target.float()
    values, full_map = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none",
                                                           return_full_image=True)
    return values, (values if mask is None else _per_image_mean(full_map, mask))


class LpipsMetric:
    """Per-image LPIPS when its weights are on this machine; otherwise ``available`` is False.

    Evaluation must not fail, or silently use a random backbone, because the
    weights are missing: the metric reports None and ``reason`` says which file
    to provide.
    """

    def __init__(self, net: str = "alex", weights_path: Optional[str] = None):
        self.net = net
        self.reason: Optional[str] = None
        try:
            self._model = load_lpips(net, weights_path)
        except LpipsUnavailable as exc:
            self._model = None
            self.reason = str(exc)

    @property
    def available(self) -> bool:
        return self._model is not None

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor) -> Optional[Tensor]:
        if self._model is None:
            return None
        return lpips_distance(self._model, pred.float(), target.float())
