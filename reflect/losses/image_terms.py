"""Photometric loss terms on images ``[B, C, H, W]`` in [0, 1].

Each function returns a scalar to minimise; the weight is applied by the
:class:`~reflect.losses.stack.LossStack`. ``mask`` (``[B, 1, H, W]``) turns a
per-pixel term into a mask-weighted mean.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601 luma, the weights of the Gradient Variance reference implementation.
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def masked_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean of ``x`` ``[B, C, H, W]``, weighted by ``mask`` ``[B, 1, H, W]`` when given."""
    if mask is None:
        return x.mean()
    w = mask.to(x.dtype).expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1e-8)


def to_grey(img: Tensor) -> Tensor:
    """``[B, 3, H, W]`` → ``[B, 1, H, W]`` luma."""
    w = img.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    return (img * w).sum(dim=1, keepdim=True)


def sobel(img: Tensor, padding: str = "zeros") -> tuple[Tensor, Tensor]:
    """Per-channel Sobel x/y responses (the cross-correlations with SOBEL_X / SOBEL_Y), same size as ``img``.

    ``padding="zeros"`` matches the Gradient Variance reference; ``"replicate"``
    avoids the artificial edge that zero padding puts at the image border.
    Computed as shifted differences and [1, 2, 1] sums of the padded image rather than a
    depthwise ``conv2d``: the same integer-weighted sums, ~3x faster on the CPU.
    """
    mode = "constant" if padding == "zeros" else padding
    p = F.pad(img, (1, 1, 1, 1), mode=mode)  # [B, C, H+2, W+2]
    diff_x = p[..., 2:] - p[..., :-2]  # [B, C, H+2, W]: right minus left
    gx = diff_x[..., :-2, :] + 2.0 * diff_x[..., 1:-1, :] + diff_x[..., 2:, :]
    smooth_x = p[..., :-2] + 2.0 * p[..., 1:-1] + p[..., 2:]  # [B, C, H+2, W]
    gy = smooth_x[..., :-2, :] - smooth_x[..., 2:, :]  # top minus bottom
    return gx, gy


def l1(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    return masked_mean((pred - target).abs(), mask)


def _gaussian_window_1d(size: int, sigma: float, like: Tensor) -> Tensor:
    """Normalised 1-D Gaussian taps [size]; the 2-D window is their outer product."""
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


BANDED_BLUR_MAX = 256  # side length up to which the banded products beat two 1-D convolutions (2·window taps)


def _band_matrix(taps: Tensor, n: int) -> Tensor:
    """[n, n] matrix M with M[i, j] = taps[j - i + r] for |j - i| <= r (r = len(taps) // 2), else 0.

    ``M @ x`` convolves the columns of ``x`` with the (symmetric) taps under zero padding: the
    rows of M simply have no entries beyond the image.
    """
    r = taps.numel() // 2
    offset = torch.arange(n, device=taps.device)[None, :] - torch.arange(n, device=taps.device)[:, None]
    inside = offset.abs() <= r
    return torch.where(inside, taps[(offset + r).clamp(0, taps.numel() - 1)], taps.new_zeros(()))


def gaussian_blur(x: Tensor, window: int, sigma: float) -> Tensor:
    """Per-channel zero-padded ``window``² Gaussian blur of ``x`` [B, C, H, W], as two 1-D passes.

    The window is the outer product of 1-D taps and zero padding commutes with the split, so
    ``B_H @ x @ B_W^T`` with banded matrices (``_band_matrix``) is the 2-D convolution up to float
    rounding. Why matrices, not ``conv2d``: on the CPU a depthwise 11-tap convolution runs ~10x
    slower than these two small matrix products, forward and backward, at the quick profile's sizes; above
    ``BANDED_BLUR_MAX`` pixels a side, two zero-padded 1-D convolutions (the same sums) are used instead.
    """
    taps = _gaussian_window_1d(window, sigma, x)
    if max(x.shape[-2:]) > BANDED_BLUR_MAX:  # the products cost O(H + W) per pixel: at large sizes 1-D convs win
        c = x.shape[1]
        x = F.conv2d(x, taps.view(1, 1, window, 1).expand(c, 1, window, 1), padding=(window // 2, 0), groups=c)
        return F.conv2d(x, taps.view(1, 1, 1, window).expand(c, 1, 1, window), padding=(0, window // 2), groups=c)
    return _band_matrix(taps, x.shape[-2]) @ x @ _band_matrix(taps, x.shape[-1]).T


def ssim_map(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """The SSIM map of 3DGS / GaussianAvatars' training loss.

    Hand-written rather than torchmetrics' because the training recipe uses a
    zero-padded ``window``-pixel Gaussian; torchmetrics derives the window size
    from σ and reflection-pads, which changes the loss at the border.
    """
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target])
    mu_p, mu_t, e_pp, e_tt, e_pt = gaussian_blur(stacked, window, sigma).split(pred.shape[0])
    var_p, var_t, cov = e_pp - mu_p**2, e_tt - mu_t**2, e_pt - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))


def dssim(pred: Tensor, target: Tensor, window: int = 11, mask: Optional[Tensor] = None) -> Tensor:
    """1 − SSIM (GaussianAvatars' D-SSIM term, weighted 0.2 against L1's 0.8)."""
    return masked_mean(1.0 - ssim_map(pred, target, window), mask)


def edge(pred: Tensor, target: Tensor, mode: str = "grey", mask: Optional[Tensor] = None) -> Tensor:
    """L1 between Sobel gradients (x and y averaged) of prediction and target."""
    if mode == "grey":
        pred, target = to_grey(pred), to_grey(target)
    px, py = sobel(pred, padding="replicate")
    tx, ty = sobel(target, padding="replicate")
    return 0.5 * (masked_mean((px - tx).abs(), mask) + masked_mean((py - ty).abs(), mask))


def gradient_variance(pred: Tensor, target: Tensor, patch_size: int = 8) -> Tensor:
    """Gradient Variance loss (Abrahamyan et al. 2022).

    Grey image → Sobel x/y → non-overlapping ``patch_size``² patches → unbiased
    variance per patch; MSE between prediction and target variance maps, x plus y.
    Sharp-detail loss: it compares how much gradients vary locally, not where.
    """
    if min(pred.shape[-2:]) < patch_size:
        raise ValueError(f"gradient_variance: image {tuple(pred.shape[-2:])} is smaller than "
                         f"patch_size={patch_size}")
    loss = pred.new_zeros(())
    for gp, gt in zip(sobel(to_grey(pred)), sobel(to_grey(target))):
        var_p = F.unfold(gp, kernel_size=patch_size, stride=patch_size).var(dim=1)
        var_t = F.unfold(gt, kernel_size=patch_size, stride=patch_size).var(dim=1)
        loss = loss + F.mse_loss(var_p, var_t)
    return loss


def focal_frequency(pred: Tensor, target: Tensor, alpha: float = 1.0, log_matrix: bool = False,
                    batch_matrix: bool = False) -> Tensor:
    """Focal Frequency Loss (Jiang et al. 2021): mean(w · |ΔF|²) over the orthonormal 2-D spectrum.

    The weight ``w = |ΔF|^α`` (optionally ``log(1 + ·)``) is normalised to [0, 1]
    by its max per image and channel (or over the batch), NaN → 0, and detached:
    it focuses the loss on the frequencies currently reproduced worst.
    """
    # The FFT is linear, so one transform of the difference gives ΔF.
    delta = torch.fft.fft2((pred - target).float(), norm="ortho")
    dist = delta.real**2 + delta.imag**2
    with torch.no_grad():
        w = dist.sqrt() ** alpha
        if log_matrix:
            w = torch.log1p(w)
        w = w / (w.max() if batch_matrix else w.amax(dim=(-2, -1), keepdim=True))
        w = torch.nan_to_num(w, nan=0.0).clamp(0.0, 1.0)
    return (w * dist).mean()


def total_variation(pred: Tensor) -> Tensor:
    """Mean |difference| of vertically plus horizontally neighbouring pixels.

    Hand-written: torchmetrics' total_variation sums over pixels, which ties the
    loss's scale to the resolution.
    """
    dy = (pred[..., 1:, :] - pred[..., :-1, :]).abs().mean()
    dx = (pred[..., :, 1:] - pred[..., :, :-1]).abs().mean()
    return dx + dy
