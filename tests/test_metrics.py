"""Per-frame evaluation metrics: PSNR/SSIM values and masks, LPIPS availability."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torchmetrics.functional.image import peak_signal_noise_ratio

from reflect.losses.lpips_loader import hub_checkpoint_path
from reflect.metrics import LpipsMetric, psnr, ssim


def _image(seed: int, b: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_psnr_value_and_per_image():
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 → 20 dB
    pred[1] += 0.01  # MSE 1e-4 → 40 dB
    got = psnr(pred, target)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx([20.0, 40.0], rel=1e-5)
    a, b = _image(1), _image(2)
    want = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    assert torch.allclose(psnr(a, b), want, rtol=1e-5)


def test_masked_psnr_ignores_pixels_outside_the_mask():
    target = torch.full((1, 3, 8, 8), 0.5)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1.0
    pred = torch.where(mask.bool(), target + 0.1, torch.rand(1, 3, 8, 8))
    assert psnr(pred, target, mask=mask).item() == pytest.approx(20.0, rel=1e-5)
    assert psnr(pred, target).item() < 20.0


def test_ssim_identical_is_one_per_image():
    img = _image(3)
    assert ssim(img, img).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    assert ssim(img, img, mask=mask).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    other = ssim(img, _image(4))
    assert other.shape == (2,) and (other < 0.5).all()


def test_ssim_mask_restricts_the_map():
    target = _image(5, b=1)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :, :16] = 1.0
    pred = torch.where(mask.bool(), target, _image(6, b=1))
    inside, outside = ssim(pred, target, mask=mask).item(), ssim(pred, target, mask=1 - mask).item()
    assert inside > 0.8 > 0.3 > outside


def test_lpips_metric_unavailable_without_weights(empty_hub: Path):
    metric = LpipsMetric("alex")
    assert not metric.available
    assert "alexnet-owt-7be5be79.pth" in (metric.reason or "")
    assert metric(_image(1), _image(2)) is None


def test_lpips_metric_with_weights_in_the_hub_cache(empty_hub: Path):
    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    path = hub_checkpoint_path("alex")
    path.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    metric = LpipsMetric("alex")
    assert metric.available and metric.reason is None
    img = _image(1, size=64)
    same, diff = metric(img, img), metric(img, _image(2, size=64))
    assert same is not None and diff is not None
    assert same.shape == diff.shape == (2,)
    assert same.abs().max().item() < 1e-6 and (diff > 0).all()


def test_region_psnr_scores_only_the_region_and_skips_empty_ones():
    from reflect.lightning.module import region_psnr

    target = torch.full((3, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[:, :, :2] += 0.1  # error only in the top two rows
    region = torch.zeros(3, 1, 8, 8)
    region[0, :, :2] = 1  # frame 0: the erroneous rows → MSE 0.01 → 20 dB
    region[1, :, 4:] = 1  # frame 1: untouched rows → no error → infinite, reported as no value
    # frame 2: empty region → no value
    values = region_psnr(pred, target, region)
    assert values[0] == pytest.approx(20.0, abs=1e-4) and values[1] is None and values[2] is None
