"""Decoder variants: output shapes, what each variant costs in parameters, conditioning behaviour."""
import pytest
import torch

from reflect.model.config import DecoderConfig, DeformConfig
from reflect.model.decoder import ScreenSpaceDecoder, conditioning_dims, view_positional_encoding
from reflect.model.deform import DeformMLP, axis_angle_to_matrix, matrix_to_quat, quat_multiply


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def make(**kw):
    cfg = DecoderConfig(**kw)
    return cfg, ScreenSpaceDecoder(cfg, in_channels=17)


@pytest.mark.parametrize("sr", [1, 2, 4])
@pytest.mark.parametrize("expr", ["none", "concat", "film"])
@pytest.mark.parametrize("view", ["none", "pe"])
def test_decoder_output_shapes(sr, expr, view):
    cfg, dec = make(sr_scale=sr, expr_conditioning=expr, view_conditioning=view)
    out = dec(torch.randn(2, 17, 8, 12), torch.randn(2, conditioning_dims(cfg)), torch.randn(2, 3))
    assert out.shape == (2, 3, 8 * sr, 12 * sr)


def test_sixth_conv_costs_one_cxc_conv():
    c = 32
    _, five = make(blocks=[2, 2, 1], channels=c)
    _, six = make(blocks=[2, 2, 2], channels=c)
    assert n_params(six) - n_params(five) == c * c * 9 + c


def test_view_pe_is_27_dims_and_costs_first_conv_inputs():
    pe = view_positional_encoding(torch.randn(4, 3), 4)
    assert pe.shape == (4, 27)
    _, plain = make(view_conditioning="none")
    _, viewed = make(view_conditioning="pe")
    assert n_params(viewed) - n_params(plain) == 27 * 32 * 9


def test_concat_adds_expression_channels_to_first_conv():
    cfg, plain = make(expr_conditioning="none")
    _, concat = make(expr_conditioning="concat")
    assert n_params(concat) - n_params(plain) == conditioning_dims(cfg) * 32 * 9


def test_expression_changes_output_only_when_conditioned():
    torch.manual_seed(0)
    feats, view = torch.randn(1, 17, 8, 8), torch.randn(1, 3)
    e1, e2 = torch.zeros(1, 13), torch.ones(1, 13)
    for mode, should_differ in [("none", False), ("concat", True), ("film", True)]:
        _, dec = make(expr_conditioning=mode)
        if mode == "film":  # FiLM starts as the identity; perturb it so the test sees the modulation path
            for f in dec.films:
                torch.nn.init.normal_(f.net[-1].weight, std=0.1)
        differ = not torch.allclose(dec(feats, e1, view), dec(feats, e2, view))
        assert differ == should_differ, mode


def test_rotation_helpers_agree():
    aa = torch.tensor([[0.3, -0.2, 0.5], [0.0, 0.0, 0.0]])
    r = axis_angle_to_matrix(aa)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    q = matrix_to_quat(r)
    # rotating a vector by q (as q v q*) equals r @ v
    v = torch.tensor([0.1, 0.7, -0.4])
    vq = torch.cat([torch.zeros(2, 1), v.expand(2, 3)], dim=1)
    qc = q * torch.tensor([1, -1, -1, -1])
    rotated = quat_multiply(quat_multiply(q, vq), qc)[:, 1:]
    assert torch.allclose(rotated, (r @ v), atol=1e-5)


def test_deform_mlp_starts_at_identity():
    mlp = DeformMLP(DeformConfig(expr_dims=10), latent_dim=8)
    d_pos, d_quat, d_ls = mlp(torch.randn(5, 8), torch.randn(5, 3), torch.randn(2, 19))
    assert d_pos.shape == (2, 5, 3) and torch.all(d_pos == 0) and torch.all(d_ls == 0)
    assert torch.allclose(d_quat, torch.tensor([1.0, 0, 0, 0]).expand(2, 5, 4))


def test_deform_mlp_split_first_layer_equals_the_concatenated_input():
    """DeformMLP computes its first layer as per-Gaussian + per-frame parts: the same as on [latent, pos, expr]."""
    from reflect.model.config import DeformConfig
    from reflect.model.deform import DeformMLP

    torch.manual_seed(0)
    mlp = DeformMLP(DeformConfig(hidden=16, layers=2, expr_dims=4), latent_dim=5).double()
    torch.nn.init.normal_(mlp.head.weight)  # the head starts at zero; make the outputs depend on the trunk
    latents, means, expr = torch.randn(30, 5).double(), torch.randn(30, 3).double(), torch.randn(3, 4 + 9).double()
    d_pos, d_quat, d_logscale = mlp(latents, means, expr)
    x = torch.cat([torch.cat([latents, means * 10.0], -1).expand(3, 30, -1), expr[:, None].expand(3, 30, -1)], -1)
    out = mlp.head(mlp.trunk(x))
    torch.testing.assert_close(d_pos, out[..., :3] * mlp.offset_scale, atol=1e-12, rtol=0)
    torch.testing.assert_close(d_quat, out[..., 3:7] + torch.tensor([1.0, 0, 0, 0]).double(), atol=1e-12, rtol=0)
    torch.testing.assert_close(d_logscale, out[..., 7:], atol=1e-12, rtol=0)


def test_the_rigid_head_composes_rotation_and_neck_pose():
    """Without a FLAME model the head turns by R(rotation) R(neck_pose): a neck turn moves it like a global one."""
    import math

    from reflect.config import load_train_config
    from reflect.model.avatar import GaussianAvatar

    cfg = load_train_config("quick", ["model.gaussians.num_gaussians=50", "model.deform.enabled=false"])
    torch.manual_seed(0)
    model = GaussianAvatar(cfg.model, None, background=(1.0, 1.0, 1.0))
    zero = torch.zeros(1, 3)
    yaw = torch.tensor([[0.0, math.pi / 2, 0.0]])
    base = {"expr": torch.zeros(1, 100), "jaw_pose": zero, "eyes_pose": torch.zeros(1, 6), "translation": zero}
    by_neck = model.deformed_gaussians({**base, "rotation": zero, "neck_pose": yaw})
    by_global = model.deformed_gaussians({**base, "rotation": yaw, "neck_pose": zero})
    still = model.deformed_gaussians({**base, "rotation": zero, "neck_pose": zero})
    assert torch.allclose(by_neck["means"], by_global["means"], atol=1e-6)
    assert not torch.allclose(by_neck["means"], still["means"], atol=1e-3)
    # a quarter turn about y maps x to -z: the composition is applied, not ignored
    assert torch.allclose(by_neck["means"][0, :, 2], -still["means"][0, :, 0], atol=1e-5)
    both = model.deformed_gaussians({**base, "rotation": yaw, "neck_pose": yaw})
    assert torch.allclose(both["means"][0, :, 0], -still["means"][0, :, 0], atol=1e-5)  # half a turn in all


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_the_rigid_head_rendered_through_its_camera_matches_the_world_space_render(backend, monkeypatch):
    """forward renders head-space Gaussians with viewmat @ pose: the image and gradients of the world render."""
    from reflect.config import load_train_config
    from reflect.data import load_splits
    from reflect.lightning.datamodule import AvatarDataModule
    from reflect.model.avatar import GaussianAvatar, to_world
    from reflect.render import numba_available

    if backend == "numba" and not numba_available():
        pytest.skip("numba is not installed")
    cfg = load_train_config("quick", ["model.gaussians.num_gaussians=400", f"render.backend={backend}"])
    splits = load_splits(cfg.data, ["train"])
    batch = next(iter(AvatarDataModule(cfg, splits, start_step=lambda: 0).train_dataloader()))
    torch.manual_seed(0)
    model = GaussianAvatar(cfg.model, splits["train"].init_points(), background=(1.0, 1.0, 1.0), render_backend=backend)
    torch.nn.init.normal_(model.deform.head.weight, std=0.05)  # a deformation that moves and turns the Gaussians
    w, h = splits["train"].width, splits["train"].height
    assert model.posed_gaussians(batch)["pose"].shape == (2, 4, 4)

    renders = {}
    for name in ("head space, pose in the camera", "world space"):
        if name == "world space":  # what forward rendered before: world-space Gaussians, the data's camera
            posed = model.posed_gaussians
            monkeypatch.setattr(model, "posed_gaussians", lambda b: {**to_world(posed(b)), "pose": None})
        model.zero_grad()
        rgb = model(batch, w, h)["rgb"]
        rgb.square().sum().backward()
        renders[name] = (rgb.detach(), model.means.grad.clone(), model.deform.head.weight.grad.clone(),
                         model.latents.grad.clone())
    for got, want in zip(*renders.values()):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, atol=2e-5 * float(want.abs().max()), rtol=1e-4)
