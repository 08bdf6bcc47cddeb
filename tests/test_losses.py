"""Loss terms on known inputs, schedules at their waypoints, the LossStack's wiring, LPIPS loading."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from reflect.config_loading import ConfigError, merge_into_schema
from reflect.losses import LossConfig, LossStack, LpipsUnavailable, ScheduleConfig, knn_graph, load_lpips, weight_at
from reflect.losses import image_terms as im
from reflect.losses import regularizers as reg
from reflect.losses import stack as stack_module
from reflect.losses.config import constant
from reflect.losses.lpips_loader import backbone_filename, hub_checkpoint_path, lpips_distance


def _image(seed: int = 0, b: int = 2, size: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=gen)


def _blur(img: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(img, 3, stride=1, padding=1, count_include_pad=False)


@pytest.fixture(scope="module")
def fake_alexnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random torchvision-format alexnet state dict (``features.*`` only): exercises real loading."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    path = tmp_path_factory.mktemp("weights") / "alexnet-features.pth"
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    return path


# --- schedules -----------------------------------------------------------------------------
def test_constant_and_step_schedules():
    assert weight_at(constant(0.3), 0, 100) == 0.3
    s = ScheduleConfig(kind="step", initial=0.1, value=0.5, start=0.5)
    assert [weight_at(s, t, 100) for t in (0, 49, 50, 99)] == [0.1, 0.1, 0.5, 0.5]


def test_linear_schedule_waypoints_and_fraction_scaling():
    s = ScheduleConfig(kind="linear", initial=1.0, value=0.0, start=0.2, end=0.6)
    assert weight_at(s, 0, 100) == 1.0
    assert weight_at(s, 20, 100) == 1.0
    assert weight_at(s, 40, 100) == pytest.approx(0.5)
    assert weight_at(s, 60, 100) == 0.0
    assert weight_at(s, 99, 100) == 0.0
    # A 10x shorter run keeps the shape.
    for t in range(0, 100, 7):
        assert weight_at(s, t, 100) == pytest.approx(weight_at(s, t * 10, 1000))


def test_deferred_exp_hits_waypoints_and_is_monotone():
    # TeGA: 0 until 50K, exponential ramp to 0.1 by 100K, in absolute steps.
    s = ScheduleConfig(kind="deferred_exp", value=0.1, start=50_000, end=100_000, units="steps")
    assert weight_at(s, 0, 10) == 0.0  # absolute steps ignore total_steps
    assert weight_at(s, 49_999, 100_000) == 0.0
    assert weight_at(s, 50_000, 100_000) == 0.0
    assert weight_at(s, 100_000, 100_000) == 0.1
    assert weight_at(s, 200_000, 100_000) == 0.1
    ramp = [weight_at(s, t, 100_000) for t in range(50_000, 100_001, 1000)]
    assert all(b > a for a, b in zip(ramp, ramp[1:]))
    assert ramp[len(ramp) // 2] < 0.05  # exponential: well below linear at the midpoint
    frac = ScheduleConfig(kind="deferred_exp", value=0.1, start=0.5, end=1.0)
    assert weight_at(frac, 300, 600) == 0.0 and weight_at(frac, 600, 600) == 0.1
    assert weight_at(frac, 450, 600) == pytest.approx(weight_at(s, 75_000, 100_000))


def test_config_validation_names_the_key():
    cfg = LossConfig()
    cfg.ffl.alpha = -1.0
    with pytest.raises(ValueError, match=r"^loss\.ffl\.alpha: expected"):
        cfg.validate()
    cfg = LossConfig()
    cfg.edge.schedule.kind = "cosine"
    with pytest.raises(ValueError, match=r"^loss\.edge\.schedule\.kind: expected .*got 'cosine'"):
        LossStack(cfg, total_steps=10)
    cfg = LossConfig()
    cfg.l1.schedule.start = 50_000  # a step count written as a fraction
    with pytest.raises(ValueError, match=r"^loss\.l1\.schedule\.start: expected a fraction.*units: steps"):
        cfg.validate()
    with pytest.raises(ConfigError) as exc:
        merge_into_schema(LossConfig, [("command line", ["gradient_variance.patch_size=1"])])
    assert exc.value.key == "gradient_variance.patch_size"


def test_loss_config_is_an_omegaconf_structured_config():
    merged = OmegaConf.merge(OmegaConf.structured(LossConfig),
                             {"ffl": {"alpha": 2.0, "schedule": {"kind": "deferred_exp", "value": 0.1, "start": 0.5}}})
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, LossConfig) and cfg.ffl.alpha == 2.0 and cfg.ffl.enabled
    assert cfg.l1.schedule.value == 0.8 and cfg.dssim.schedule.value == 0.2 and cfg.edge.schedule.value == 0.1
    assert not cfg.lpips.enabled


# --- image terms ---------------------------------------------------------------------------
def test_gradient_variance_zero_identical_positive_blurred():
    img = _image()
    assert im.gradient_variance(img, img).item() == 0.0
    assert im.gradient_variance(_blur(img), img).item() > 0.0


def test_gradient_variance_hand_computed():
    # One bright pixel in a 2x2 image, one 2x2 patch, zero padding: Sobel x gives
    # {0, -2g, 0, -g}, Sobel y {0, 0, 2g, g}; both have unbiased variance 11/12·g².
    pred = torch.zeros(1, 3, 2, 2)
    pred[..., 0, 0] = 1.0
    g = sum(im.GREY_WEIGHTS)
    expected = 2 * (11 / 12 * g**2) ** 2  # target is flat: its variances are 0
    assert im.gradient_variance(pred, torch.zeros_like(pred), patch_size=2).item() == pytest.approx(expected)


def _ffl_numpy(p: np.ndarray, t: np.ndarray, alpha: float, log_matrix: bool = False,
               batch_matrix: bool = False) -> float:
    d = np.fft.fft2(p, norm="ortho") - np.fft.fft2(t, norm="ortho")
    w = np.abs(d) ** alpha
    if log_matrix:
        w = np.log(w + 1.0)
    w = w / (w.max() if batch_matrix else w.max(axis=(-2, -1), keepdims=True))
    w = np.clip(np.nan_to_num(w, nan=0.0), 0.0, 1.0)
    return float(np.mean(w * np.abs(d) ** 2))


def test_focal_frequency_zero_identical_positive_blurred():
    img = _image()
    assert im.focal_frequency(img, img).item() == 0.0
    assert im.focal_frequency(_blur(img), img).item() > 0.0


@pytest.mark.parametrize("alpha,log_matrix,batch_matrix", [(1.0, False, False), (2.0, True, False), (0.5, False, True)])
def test_focal_frequency_matches_direct_fft(alpha: float, log_matrix: bool, batch_matrix: bool):
    pred, target = _image(1, size=16), _image(2, size=16)
    got = im.focal_frequency(pred, target, alpha, log_matrix, batch_matrix).item()
    want = _ffl_numpy(pred.double().numpy(), target.double().numpy(), alpha, log_matrix, batch_matrix)
    assert got == pytest.approx(want, rel=1e-4)


def test_total_variation_hand_computed():
    img = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert im.total_variation(img).item() == pytest.approx(1.0)  # horizontal 1, vertical 0


@pytest.mark.parametrize("term", [lambda p, t: im.dssim(p, t), lambda p, t: im.edge(p, t, "grey"),
                                  lambda p, t: im.edge(p, t, "rgb"), lambda p, t: im.l1(p, t)])
def test_per_pixel_terms_zero_identical_positive_blurred(term):
    img = _image()
    assert term(img, img).item() == pytest.approx(0.0, abs=1e-6)
    assert term(_blur(img), img).item() > 1e-3


def test_mask_restricts_per_pixel_terms():
    pred, target = _image(1), _image(2)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., :16, :] = 1.0
    pred_inside_equal = torch.where(mask.bool(), target, pred)
    assert im.l1(pred_inside_equal, target, mask).item() == 0.0
    assert im.l1(pred_inside_equal, target).item() > 0.0


# --- regularisers --------------------------------------------------------------------------
def test_knn_graph_matches_brute_force():
    points = torch.rand(300, 3, generator=torch.Generator().manual_seed(3))
    got = knn_graph(points, 6, chunk_size=64)  # several chunks
    d = np.linalg.norm(points.double().numpy()[:, None] - points.double().numpy()[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    want = np.argsort(d, axis=1)[:, :6]
    assert got.dtype == torch.long and got.shape == (300, 6)
    np.testing.assert_array_equal(got.numpy(), want)


def test_knn_graph_excludes_self_even_with_duplicates():
    points = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]])
    first = knn_graph(points, 1)[:, 0].tolist()
    assert first[0] == 1 and first[1] == 0 and first[2] in (0, 1) and first[3] == 2
    with pytest.raises(ValueError, match="k < N"):
        knn_graph(points, 4)


def test_laplacian_zero_for_constant_latents_positive_otherwise():
    points = torch.rand(50, 3, generator=torch.Generator().manual_seed(4))
    knn = knn_graph(points, 8)
    assert reg.laplacian_smoothness(torch.ones(50, 16) * 0.3, knn).item() == pytest.approx(0.0, abs=1e-12)
    assert reg.laplacian_smoothness(torch.randn(50, 16), knn).item() > 0.0
    # Hand value: f = [0, 2, 4], neighbours 1, 0, 1 → residuals -2, 2, 2.
    latents = torch.tensor([[0.0], [2.0], [4.0]])
    index = torch.tensor([[1], [0], [1]])
    assert reg.laplacian_smoothness(latents, index).item() == pytest.approx((4 + 4 + 4) / 3)


def test_threshold_regularisers():
    offsets = torch.tensor([[[0.003, 0.0, 0.004], [0.0, 0.0, 0.001]]])  # norms 0.005, 0.001
    assert reg.offset_threshold(offsets, 0.002).item() == pytest.approx((0.003 + 0.0) / 2)
    scales = torch.tensor([[0.005, 0.006, 0.001], [0.001, 0.001, 0.001]])
    assert reg.scale_threshold(scales, 0.002).item() == pytest.approx(math.hypot(0.003, 0.004) / 2)


# --- the stack -----------------------------------------------------------------------------
def test_default_stack_sums_weighted_terms_and_never_builds_lpips(monkeypatch: pytest.MonkeyPatch):
    def no_lpips(*args, **kwargs):
        raise AssertionError("LPIPS must not be constructed when disabled")

    monkeypatch.setattr(stack_module, "load_lpips", no_lpips)
    stack = LossStack(LossConfig(), total_steps=100)
    assert stack.enabled_terms() == ["l1", "dssim", "edge"]
    assert stack.discriminator is None
    pred, target = _image(1).requires_grad_(), _image(2)
    total, logs = stack(pred, target, step=0)
    want = 0.8 * im.l1(pred, target) + 0.2 * im.dssim(pred, target) + 0.1 * im.edge(pred, target)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert logs["loss/total"] == pytest.approx(want.item(), rel=1e-6)
    assert logs["weight/l1"] == 0.8 and logs["loss/l1"] == pytest.approx(im.l1(pred, target).item())
    total.backward()
    assert pred.grad is not None


def test_stack_skips_terms_whose_weight_is_zero_now(monkeypatch: pytest.MonkeyPatch):
    cfg = LossConfig()
    cfg.ffl.schedule = ScheduleConfig(kind="deferred_exp", value=1.0, start=0.5, end=1.0)
    cfg.gradient_variance.schedule = constant(0.5)
    stack = LossStack(cfg, total_steps=100)
    assert "ffl" in stack.enabled_terms() and "gradient_variance" in stack.enabled_terms()

    def boom(*args, **kwargs):
        raise AssertionError("computed while its weight is 0")

    monkeypatch.setattr(im, "focal_frequency", boom)
    _, logs = stack(_image(1), _image(2), step=10)
    assert "loss/ffl" not in logs and "weight/ffl" not in logs and "loss/gradient_variance" in logs
    monkeypatch.undo()
    _, logs = stack(_image(1), _image(2), step=75)
    assert logs["weight/ffl"] == pytest.approx(weight_at(cfg.ffl.schedule, 75, 100)) and logs["loss/ffl"] > 0


def test_stack_uses_the_mask_only_when_configured():
    cfg = LossConfig()
    cfg.dssim.schedule, cfg.edge.schedule = constant(0.0), constant(0.0)
    pred, target = _image(1), _image(2)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    pred = torch.where(mask.bool(), target, pred)
    _, full = LossStack(cfg, total_steps=10)(pred, target, step=0, mask=mask)
    cfg.masked = True
    _, masked = LossStack(cfg, total_steps=10)(pred, target, step=0, mask=mask)
    assert full["loss/l1"] > 0.1 and masked["loss/l1"] == 0.0


def test_stack_regularisers_read_aux_and_complain_when_it_is_missing():
    cfg = LossConfig()
    for name in ("l1", "dssim", "edge"):
        cfg.term(name).schedule = constant(0.0)
    cfg.laplacian.schedule = constant(1.0)
    cfg.position_reg.schedule = constant(2.0)
    cfg.scale_reg.schedule = constant(3.0)
    stack = LossStack(cfg, total_steps=10)
    means = torch.rand(40, 3)
    aux = {"latents": torch.randn(40, 4), "knn_index": knn_graph(means, 8),
           "offsets": torch.full((2, 40, 3), 0.01), "scales": torch.full((40, 3), 0.01)}
    total, logs = stack(_image(), _image(1), step=0, aux=aux)
    want = (reg.laplacian_smoothness(aux["latents"], aux["knn_index"])
            + 2 * reg.offset_threshold(aux["offsets"], cfg.position_reg.threshold)
            + 3 * reg.scale_threshold(aux["scales"], cfg.scale_reg.threshold))
    assert total.item() == pytest.approx(want.item(), rel=1e-6) and logs["loss/position_reg"] > 0
    with pytest.raises(ValueError, match=r"loss\.laplacian.*knn_index"):
        stack(_image(), _image(1), step=0, aux={"latents": aux["latents"]})


def test_adversarial_term_and_discriminator_loss():
    cfg = LossConfig()
    for name in ("l1", "dssim", "edge"):  # only the adversarial term: its gradient is then the only one
        cfg.term(name).schedule = constant(0.0)
    cfg.adversarial.schedule = ScheduleConfig(kind="step", value=0.05, start=0.5)
    cfg.adversarial.channels = 8
    stack = LossStack(cfg, total_steps=100)
    assert stack.enabled_terms() == ["adversarial"]
    d = stack.discriminator
    assert d is not None
    pred, target = _image(1).requires_grad_(), _image(2)
    assert stack.discriminator_loss(pred.detach(), target, step=10) is None
    _, logs = stack(pred, target, step=10)
    assert "loss/adversarial" not in logs
    total, logs = stack(pred, target, step=60)
    assert logs["weight/adversarial"] == 0.05
    assert total.item() == pytest.approx(0.05 * logs["loss/adversarial"], rel=1e-6) and logs["loss/adversarial"] > 0
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0  # the generator loss backpropagates to the image
    assert all(p.grad is None for p in d.parameters())  # the generator step leaves D alone
    logits: list[torch.Tensor] = []  # D's outputs in call order (real, then fake), as D (training mode) saw them
    hook = d.register_forward_hook(lambda module, inputs, out: logits.append(out.detach()))
    d_loss = stack.discriminator_loss(pred.detach(), target, step=60)
    hook.remove()
    assert d_loss is not None and len(logits) == 2
    real, fake = logits
    want = F.softplus(-real).mean() + F.softplus(fake).mean()  # the non-saturating (default) logistic loss
    assert d_loss.item() == pytest.approx(want.item(), rel=1e-6)
    d_loss.backward()
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad)
    assert LossStack(LossConfig(), total_steps=100).discriminator_loss(pred.detach(), target, step=60) is None


def test_adversarial_losses_are_nonsaturating_by_default():
    cfg = LossConfig()
    assert cfg.adversarial.loss == "nonsaturating"
    cfg.adversarial.schedule = constant(0.5)
    cfg.adversarial.channels = 8
    stack = LossStack(cfg, total_steps=10)
    d = stack.discriminator
    assert d is not None
    d.eval()  # no spectral-norm power iteration: D is the same function on every call
    pred, target = _image(1), _image(2)
    _, logs = stack(pred, target, step=0)
    with torch.no_grad():
        fake, real = d(pred), d(target)
    assert logs["loss/adversarial"] == pytest.approx(F.softplus(-fake).mean().item(), rel=1e-5)
    d_loss = stack.discriminator_loss(pred, target, step=0)
    assert d_loss is not None
    assert d_loss.item() == pytest.approx((F.softplus(-real).mean() + F.softplus(fake).mean()).item(), rel=1e-5)


def test_stack_total_is_the_weighted_sum_of_its_logged_terms():
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LossConfig), OmegaConf.from_dotlist([
        "gradient_variance.schedule.value=0.3", "ffl.schedule.value=2.0", "tv.schedule.value=0.05",
        "tv.schedule.kind=linear", "tv.schedule.start=0.5", "tv.schedule.initial=0.01"])))
    stack = LossStack(cfg, total_steps=100)
    assert stack.enabled_terms() == ["l1", "dssim", "edge", "gradient_variance", "ffl", "tv"]
    total, logs = stack(_image(1), _image(2), step=75)
    assert logs["weight/tv"] == pytest.approx(0.03)
    terms = [k.removeprefix("weight/") for k in logs if k.startswith("weight/")]
    assert sorted(terms) == sorted(stack.enabled_terms())
    want = sum(logs[f"weight/{t}"] * logs[f"loss/{t}"] for t in terms)
    assert total.item() == pytest.approx(want, rel=1e-6) and logs["loss/total"] == pytest.approx(want, rel=1e-6)


# --- LPIPS ---------------------------------------------------------------------------------
def test_backbone_filenames_are_torchvisions():
    assert backbone_filename("alex") == "alexnet-owt-7be5be79.pth"
    assert backbone_filename("vgg") == "vgg16-397923af.pth"


def test_lpips_without_weights_raises_naming_the_file(empty_hub: Path):
    with pytest.raises(LpipsUnavailable, match="alexnet-owt-7be5be79.pth") as exc:
        load_lpips("alex")
    assert str(empty_hub / "checkpoints") in str(exc.value) and "weights_path" in str(exc.value)
    with pytest.raises(LpipsUnavailable, match="vgg16-397923af.pth"):
        load_lpips("vgg")
    with pytest.raises(LpipsUnavailable, match="nowhere.pth"):
        load_lpips("alex", weights_path=str(empty_hub / "nowhere.pth"))
    cfg = LossConfig()
    cfg.lpips.schedule = constant(0.1)
    with pytest.raises(LpipsUnavailable, match="alexnet-owt-7be5be79.pth"):
        LossStack(cfg, total_steps=10)


def test_lpips_random_backbone_wiring():
    torch.manual_seed(0)
    model = load_lpips("alex", pnet_rand=True)
    img = _image(size=64)
    assert lpips_distance(model, img, img).abs().max().item() < 1e-6
    d = lpips_distance(model, img, _image(5, size=64))
    assert d.shape == (2,) and (d > 0).all()


def test_lpips_loads_the_backbone_from_the_hub_cache(empty_hub: Path, fake_alexnet_file: Path):
    target = hub_checkpoint_path("alex")
    assert target == empty_hub / "checkpoints" / "alexnet-owt-7be5be79.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(fake_alexnet_file.read_bytes())
    model = load_lpips("alex")
    saved = torch.load(fake_alexnet_file)
    loaded = {name.split(".", 1)[1]: p for name, p in model.net.named_parameters()}  # "slice2.3.weight" → "3.weight"
    assert len(loaded) == len(saved) == 10
    assert all(torch.equal(loaded[k.removeprefix("features.")], v) for k, v in saved.items())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_lpips_loss_from_weights_path(fake_alexnet_file: Path, tmp_path: Path):
    cfg = LossConfig()
    for name in ("l1", "dssim", "edge"):  # only LPIPS: its gradient is then the only one
        cfg.term(name).schedule = constant(0.0)
    cfg.lpips.schedule = constant(0.5)
    cfg.lpips.weights_path = str(fake_alexnet_file)
    stack = LossStack(cfg, total_steps=10)
    assert stack.enabled_terms() == ["lpips"]
    assert not any("lpips" in k for k in stack.state_dict())  # weights come from files, not checkpoints
    img = _image(size=64)
    _, logs = stack(img, img, step=0)
    assert logs["loss/lpips"] == pytest.approx(0.0, abs=1e-6)
    pred = _image(5, size=64).requires_grad_()
    total, logs = stack(pred, img, step=0)
    assert logs["loss/lpips"] > 0 and logs["weight/lpips"] == 0.5
    assert total.item() == pytest.approx(0.5 * logs["loss/lpips"], rel=1e-6)
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0  # LPIPS backpropagates to the image
    bad = tmp_path / "not-alexnet.pth"
    torch.save({"weight": torch.zeros(1)}, bad)
    with pytest.raises(LpipsUnavailable, match="not-alexnet.pth"):
        load_lpips("alex", weights_path=str(bad))


def test_dssim_blur_equals_the_2d_gaussian_window_convolution():
    """The two banded matrix products are the zero-padded window's 2-D convolution (float64: equal to 1e-12)."""
    from reflect.losses.image_terms import _gaussian_window_1d, gaussian_blur

    x = torch.rand(4, 3, 20, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    big = torch.rand(1, 3, 300, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))  # conv path
    for image in (x, big):
        for size, sigma in ((11, 1.5), (7, 1.0)):
            taps = _gaussian_window_1d(size, sigma, image)
            window = (taps[:, None] * taps[None, :]).expand(3, 1, size, size)
            expected = F.conv2d(image, window, padding=size // 2, groups=3)
            torch.testing.assert_close(gaussian_blur(image, size, sigma), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_sobel_equals_the_kernel_cross_correlation(padding):
    """The shifted-difference Sobel is conv2d with SOBEL_X / SOBEL_Y (float64: equal to 1e-12)."""
    from reflect.losses.image_terms import SOBEL_X, SOBEL_Y, sobel

    x = torch.rand(2, 3, 13, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kernels = x.new_tensor([SOBEL_X, SOBEL_Y]).unsqueeze(1).repeat(3, 1, 1, 1)
    padded = F.pad(x, (1, 1, 1, 1), mode="constant" if padding == "zeros" else padding)
    expected = F.conv2d(padded, kernels, groups=3)
    gx, gy = sobel(x, padding)
    torch.testing.assert_close(gx, expected[:, 0::2], atol=1e-12, rtol=0)
    torch.testing.assert_close(gy, expected[:, 1::2], atol=1e-12, rtol=0)
