"""Tests for reflect.render: the CPU backends (numba, torch) vs the dense reference, gradcheck, gsplat parity, behaviour."""
from __future__ import annotations

import math
from typing import Dict

import pytest
import torch

from reflect.render import rasterization, resolve_backend
from reflect.render.projection import project_gaussians
from reflect.render.reference import rasterization_reference

GRAD_KEYS = ("means", "quats", "scales", "opacities", "colors", "backgrounds")


def random_scene(n: int, cams: int, d: int, size=(24, 20), seed: int = 0, dtype=torch.float32) -> Dict:
    """Random Gaussians in front of / behind / at the near plane of C cameras; mixed huge and tiny."""
    g = torch.Generator().manual_seed(seed)
    w, h = size
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.6, 0.5, 0.6])
    means[: n // 10, 2] = -2.5  # behind every camera
    means[n // 10 : n // 10 + 2, 2] = -2.0 + 0.005  # within the near plane of camera 0
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.8) * 0.05
    scales[-3:] *= 20.0  # huge
    scales[-6:-3] *= 0.01  # tiny
    viewmats = torch.eye(4).repeat(cams, 1, 1)
    for c in range(cams):
        a = 0.4 * c
        viewmats[c, 0, 0], viewmats[c, 0, 2], viewmats[c, 2, 0], viewmats[c, 2, 2] = (
            math.cos(a), math.sin(a), -math.sin(a), math.cos(a))
        viewmats[c, 2, 3] = 2.0 + 0.2 * c
    f = 1.2 * w
    Ks = torch.tensor([[f, 0.0, w / 2 + 0.3], [0.0, f * 1.05, h / 2 - 0.2], [0.0, 0.0, 1.0]]).repeat(cams, 1, 1)
    scene = dict(
        means=means, quats=torch.randn(n, 4, generator=g), scales=scales,
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01, colors=torch.rand(n, d, generator=g),
        viewmats=viewmats, Ks=Ks, backgrounds=torch.rand(cams, d, generator=g),
    )
    out = {k: v.to(dtype) for k, v in scene.items()}
    out.update(width=w, height=h)
    return out


def run(fn, scene: Dict, **kw):
    inputs = {k: (v.clone().requires_grad_(True) if k in GRAD_KEYS else v) for k, v in scene.items()}
    img, alpha, meta = fn(**inputs, **kw)
    g = torch.Generator().manual_seed(1)
    w_img, w_alpha = torch.rand(img.shape, generator=g), torch.rand(alpha.shape, generator=g)
    loss = (img * w_img.to(img.device)).sum() + (alpha * w_alpha.to(alpha.device)).sum()
    loss.backward()
    grads = {k: inputs[k].grad for k in GRAD_KEYS if k in inputs}
    return img.detach(), alpha.detach(), meta, grads


CPU_BACKENDS = ("numba", "torch")  # numba is a dependency: the default CPU path must be tested, never skipped


def torch_fn(**kw):
    return rasterization(**kw, backend="torch")


def backend_fn(backend: str):
    return lambda **kw: rasterization(**kw, backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("d,cams,mode", [(3, 3, "RGB+ED"), (16, 2, "RGB"), (16, 2, "RGB+D"), (3, 2, "ED")])
def test_cpu_backend_matches_dense_reference(backend: str, d: int, cams: int, mode: str) -> None:
    scene = random_scene(300, cams, d, seed=d + cams)
    img_t, a_t, meta, g_t = run(backend_fn(backend), scene, render_mode=mode)
    assert meta["backend"] == backend
    img_r, a_r, _, g_r = run(rasterization_reference, scene, render_mode=mode)
    radii = meta["radii"]
    assert radii.shape == (cams, 300, 2) and radii.dtype == torch.int32
    assert (radii[:, : 30] == 0).all(), "Gaussians behind the cameras must be culled"
    assert (radii[0, 30:32] == 0).all(), "Gaussians inside the near plane must be culled"
    assert (radii > 0).all(-1).sum() > 100
    assert 0.05 < a_t.mean() < 0.99
    torch.testing.assert_close(a_t, a_r, atol=1e-5, rtol=0)
    torch.testing.assert_close(img_t, img_r, atol=2e-5, rtol=1e-5)
    for k in g_r:
        if g_r[k] is None:  # e.g. colors in depth-only modes
            assert g_t[k] is None, k
            continue
        assert g_t[k] is not None and torch.isfinite(g_t[k]).all(), k
        scale = g_r[k].abs().max().clamp(min=1e-6)
        torch.testing.assert_close(g_t[k] / scale, g_r[k] / scale, atol=1e-4, rtol=0, msg=k)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_camera_colors_match_reference(backend: str) -> None:
    scene = random_scene(120, 2, 4, seed=5)
    scene["colors"] = torch.rand(2, 120, 4, generator=torch.Generator().manual_seed(9))
    img_t, a_t, _, g_t = run(backend_fn(backend), scene)
    img_r, a_r, _, g_r = run(rasterization_reference, scene)
    torch.testing.assert_close(img_t, img_r, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(g_t["colors"], g_r["colors"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_float64(backend: str) -> None:
    """Gradients of the hand-written backward on a tiny scene, away from the 1/255 cutoff."""
    means = torch.tensor([[0.0, 0.0, 2.0], [0.1, -0.05, 2.3], [-0.08, 0.06, 1.8], [0.05, 0.1, 2.6]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0.1, 0.2, 0.0], [0.9, -0.2, 0.1, 0.3], [1.0, 0.0, 0.0, 0.4], [0.7, 0.3, -0.2, 0.1]],
                         dtype=torch.float64)
    scales = torch.tensor([[0.06, 0.04, 0.05], [0.05, 0.07, 0.04], [0.04, 0.05, 0.06], [0.08, 0.05, 0.05]],
                          dtype=torch.float64)
    opacities = torch.tensor([0.9, 0.7, 0.6, 0.8], dtype=torch.float64)
    colors = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bg = torch.tensor([[0.2, 0.5, 0.1]], dtype=torch.float64)
    viewmats = torch.eye(4, dtype=torch.float64)[None]
    Ks = torch.tensor([[[20.0, 0, 4.1], [0, 20.0, 3.9], [0, 0, 1]]], dtype=torch.float64)

    def f(means, quats, scales, opacities, colors, bg):
        img, alpha, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, 8, 8,
                                      backgrounds=bg, render_mode="RGB+ED", backend=backend)
        return img, alpha

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors, bg))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_projection_matches_gsplat_torch_impl() -> None:
    impl = pytest.importorskip("gsplat.cuda._torch_impl")
    scene = random_scene(200, 3, 3, size=(32, 24), seed=3)
    covars, _ = impl._quat_scale_to_covar_preci(scene["quats"], scene["scales"], compute_preci=False)
    radii_g, means2d_g, depths_g, conics_g, comp_g = impl._fully_fused_projection(
        scene["means"], covars, scene["viewmats"], scene["Ks"], 32, 24, eps2d=0.3, near_plane=0.01,
        calc_compensations=True)
    proj = project_gaussians(scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"],
                             32, 24, eps2d=0.3, near_plane=0.01, antialiased=True)
    assert proj.radii.dtype == radii_g.dtype and proj.radii.shape == radii_g.shape
    v = proj.valid
    assert torch.equal(proj.radii, radii_g)
    torch.testing.assert_close(proj.depths, depths_g)
    torch.testing.assert_close(proj.means2d[v], means2d_g[v], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(proj.conics[v], conics_g[v], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(proj.opacities[v], comp_g[v], atol=1e-5, rtol=1e-4)  # antialiasing factor


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opaque_gaussian_alpha_and_background(backend: str) -> None:
    means = torch.tensor([[0.0, 0.0, 1.0]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    scales = torch.full((1, 3), 0.01)
    Ks = torch.tensor([[[100.0, 0, 8.5], [0, 100.0, 8.5], [0, 0, 1]]])  # centre of pixel (8, 8)
    viewmats = torch.eye(4)[None]
    for o in (0.5, 1.0):
        img, alpha, _ = rasterization(means, quats, scales, torch.tensor([o]), torch.ones(1, 3), viewmats, Ks,
                                      16, 16, backgrounds=torch.tensor([[0.2, 0.4, 0.6]]), backend=backend)
        a = min(0.999, o)
        assert alpha[0, 8, 8, 0].item() == pytest.approx(a, abs=1e-6)
        assert alpha[0, 0, 0, 0].item() == 0.0
        torch.testing.assert_close(img[0, 8, 8], a + (1 - a) * torch.tensor([0.2, 0.4, 0.6]))
        torch.testing.assert_close(img[0, 0, 0], torch.tensor([0.2, 0.4, 0.6]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_transmittance_stop_is_exclusive(backend: str) -> None:
    """gsplat stops a pixel before the Gaussian that would bring T to <= 1e-4 (it is not composited)."""
    n = 6
    means = torch.stack([torch.zeros(n), torch.zeros(n), 1.0 + 0.1 * torch.arange(n)], dim=1)
    Ks = torch.tensor([[[200.0, 0, 4.5], [0, 200.0, 4.5], [0, 0, 1]]])  # centre of pixel (4, 4)
    colors = torch.eye(n)
    kw = dict(quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), scales=torch.full((n, 3), 0.02),
              opacities=torch.full((n,), 0.95), colors=colors, viewmats=torch.eye(4)[None], Ks=Ks,
              width=9, height=9)
    img, alpha, _ = rasterization(means, **kw, backend=backend)
    # T after k Gaussians is 0.05^k: 0.05, 2.5e-3, 1.25e-4, then 6.25e-6 <= 1e-4, so only three count.
    expected = torch.tensor([0.95, 0.95 * 0.05, 0.95 * 0.05**2, 0, 0, 0])
    torch.testing.assert_close(img[0, 4, 4], expected, atol=1e-6, rtol=1e-5)
    assert alpha[0, 4, 4, 0].item() == pytest.approx(1 - 0.05**3, abs=1e-6)
    img_r, alpha_r, _ = rasterization_reference(means, **kw)
    torch.testing.assert_close(img, img_r, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alpha, alpha_r, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nothing_visible_gives_background_and_zero_grads(backend: str) -> None:
    scene = random_scene(20, 2, 3, seed=4)
    scene["means"] = scene["means"].clone()
    scene["means"][:, 2] = -5.0  # behind both cameras
    img, alpha, meta, grads = run(backend_fn(backend), scene)
    assert (meta["radii"] == 0).all()
    torch.testing.assert_close(img, scene["backgrounds"][:, None, None, :].expand_as(img))
    assert (alpha == 0).all()
    for k in ("means", "quats", "scales", "opacities", "colors"):
        assert grads[k] is not None and (grads[k] == 0).all(), k


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_permutation_invariance(backend: str) -> None:
    scene = random_scene(200, 2, 5, seed=11)
    img, alpha, _ = backend_fn(backend)(**scene)
    p = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    shuffled = dict(scene)
    for k in ("means", "quats", "scales", "opacities", "colors"):
        shuffled[k] = scene[k][p]
    img_p, alpha_p, _ = backend_fn(backend)(**shuffled)
    torch.testing.assert_close(img_p, img, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(alpha_p, alpha, atol=1e-6, rtol=1e-6)


def test_backend_selection_and_errors() -> None:
    scene = random_scene(50, 1, 3, seed=2)
    assert resolve_backend(None, torch.device("cpu")) == "numba"  # the fastest CPU backend when numba imports
    _, _, meta = rasterization(**scene)
    assert meta["backend"] == "numba" and meta["width"] == 24 and meta["height"] == 20
    assert meta["means2d"].shape == (1, 50, 2) and meta["depths"].shape == (1, 50)
    with pytest.raises(ValueError, match="gsplat.*numba.*torch"):
        rasterization(**scene, backend="vulkan")
    with pytest.raises(NotImplementedError, match="sh_degree"):
        rasterization(**scene, backend="torch", sh_degree=3)
    with pytest.raises(NotImplementedError, match="absgrad"):
        rasterization(**scene, backend="torch", absgrad=True)
    with pytest.raises(NotImplementedError, match="radial_coeffs"):
        rasterization(**scene, backend="torch", radial_coeffs=torch.zeros(1, 6))
    with pytest.raises(TypeError, match="bogus"):
        rasterization(**scene, backend="torch", bogus=1)
    # accepted, and no effect on results: the same image and alpha as a plain torch call
    img_p, alpha_p, _ = rasterization(**scene, backend="torch", packed=True, tile_size=16)
    img_0, alpha_0, _ = rasterization(**scene, backend="torch")
    torch.testing.assert_close(img_p, img_0, atol=0, rtol=0)
    torch.testing.assert_close(alpha_p, alpha_0, atol=0, rtol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_near_opaque_stacks_match_reference_gradients(backend: str) -> None:
    """Alphas at the 0.999 clamp, layered so that T runs down to the 1e-4 stop: the backward must not
    rebuild T by dividing by 1 - alpha (float64, so only the algorithm, not rounding, is tested)."""
    scene = random_scene(200, 2, 3, seed=12, dtype=torch.float64)
    scene["opacities"] = scene["opacities"].clone()
    scene["opacities"][::2] = 0.9999  # clamped to 0.999 near their centres
    scene["scales"] = scene["scales"] * 3.0  # overlapping: many pixels reach the transmittance stop
    img_b, a_b, _, g_b = run(backend_fn(backend), scene)
    img_r, a_r, _, g_r = run(rasterization_reference, scene)
    assert (a_r > 1 - 1e-3).float().mean() > 0.2  # the stop is reached in a good share of the pixels
    torch.testing.assert_close(img_b, img_r, atol=1e-10, rtol=1e-9)
    for k in g_r:
        scale = g_r[k].abs().max().clamp(min=1e-12)
        torch.testing.assert_close(g_b[k] / scale, g_r[k] / scale, atol=1e-8, rtol=0, msg=k)


@pytest.mark.parametrize("bands", [2, 3, 5])
def test_numba_row_bands_give_the_single_band_result(monkeypatch, bands: int) -> None:
    """Splitting the rows into bands (one per thread) changes nothing but the order of gradient sums."""
    from reflect.render import numba_backend

    scene = random_scene(250, 2, 4, seed=13, dtype=torch.float64)
    monkeypatch.setattr(numba_backend, "_bands", lambda height: 1)
    img_1, a_1, _, g_1 = run(backend_fn("numba"), scene)
    monkeypatch.setattr(numba_backend, "_bands", lambda height: bands)
    img_b, a_b, _, g_b = run(backend_fn("numba"), scene)
    torch.testing.assert_close(img_b, img_1, atol=1e-13, rtol=0)
    torch.testing.assert_close(a_b, a_1, atol=1e-13, rtol=0)
    for k in g_1:
        torch.testing.assert_close(g_b[k], g_1[k], atol=1e-11, rtol=1e-11, msg=k)


def test_numba_backend_errors_match_torch() -> None:
    scene = random_scene(50, 1, 3, seed=2)
    with pytest.raises(NotImplementedError, match="sh_degree"):
        rasterization(**scene, backend="numba", sh_degree=3)
    with pytest.raises(TypeError, match="bogus"):
        rasterization(**scene, backend="numba", bogus=1)
    with pytest.raises(ValueError, match="render_mode"):
        rasterization(**scene, backend="numba", render_mode="RGBA")


@pytest.mark.parametrize("antialiased", [False, True])
def test_numba_projection_matches_torch_projection(antialiased: bool) -> None:
    """The analytic projection backward equals autograd through the torch projection (float64), including
    Gaussians behind the camera, inside the near plane, beyond the Jacobian's clamp, huge and tiny ones."""
    from reflect.render.numba_backend import project_gaussians_numba

    scene = random_scene(300, 3, 3, size=(32, 24), seed=7, dtype=torch.float64)
    keys = ("means", "quats", "scales", "opacities")
    g = torch.Generator().manual_seed(3)
    results = []
    for project in (project_gaussians, project_gaussians_numba):
        leaves = {k: scene[k].clone().requires_grad_(True) for k in keys}
        proj = project(leaves["means"], leaves["quats"], leaves["scales"], scene["viewmats"], scene["Ks"], 32, 24,
                       opacities=leaves["opacities"], eps2d=0.3, antialiased=antialiased)
        outputs = (proj.means2d, proj.conics, proj.depths, proj.opacities)
        g.manual_seed(3)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outputs)
        loss.backward()
        results.append((proj, {k: leaves[k].grad for k in keys}))
    (p_t, g_t), (p_n, g_n) = results
    assert torch.equal(p_t.valid, p_n.valid) and torch.equal(p_t.radii, p_n.radii)
    assert 0 < p_t.valid.sum() < p_t.valid.numel()  # some culled, some kept
    x_over_z = p_t.means2d[..., 0]  # some means land beyond the image (clamped Jacobian)
    assert ((x_over_z < -8) | (x_over_z > 40)).any()
    for a, b in zip((p_t.means2d, p_t.conics, p_t.depths, p_t.opacities), (p_n.means2d, p_n.conics, p_n.depths,
                                                                            p_n.opacities)):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)
    for k in keys:
        torch.testing.assert_close(g_n[k], g_t[k], atol=1e-9, rtol=1e-9, msg=k)


def test_numba_falls_back_to_torch_projection_where_it_has_no_kernel() -> None:
    """Explicit covariances and camera gradients go through the torch projection: same values, all gradients."""
    scene = random_scene(120, 2, 3, seed=8)
    from reflect.render.projection import quat_to_rotmat

    M = quat_to_rotmat(scene["quats"]) * scene["scales"][:, None, :]
    covars = M @ M.transpose(1, 2)
    kw = {k: v for k, v in scene.items() if k not in ("quats", "scales")}
    img_t, a_t, _ = rasterization(**kw, quats=None, scales=None, covars=covars, backend="torch")
    img_n, a_n, meta = rasterization(**kw, quats=None, scales=None, covars=covars, backend="numba")
    assert meta["backend"] == "numba"
    # float32 compositing in both backends (same projection, different compositor): a few ulps of summation order
    torch.testing.assert_close(img_n, img_t, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(a_n, a_t, atol=2e-5, rtol=1e-5)
    assert a_t.max() > 0.5  # something is actually drawn, so the comparison is not of two empty images
    view_grads = {}
    for backend in CPU_BACKENDS:
        viewmats = scene["viewmats"].clone().requires_grad_(True)
        img, alpha, _ = rasterization(**{**scene, "viewmats": viewmats}, backend=backend)
        (img.sum() + alpha.sum()).backward()
        assert viewmats.grad is not None and viewmats.grad.abs().sum() > 0, backend
        view_grads[backend] = viewmats.grad
    # float32 gradient sums (~500 pixels x 120 Gaussians) in another order: relative to the largest (seen: 6e-7)
    scale = view_grads["torch"].abs().max()
    torch.testing.assert_close(view_grads["numba"] / scale, view_grads["torch"] / scale, atol=1e-5, rtol=0)


def head_scene(n: int, size: int, d: int, device: str) -> Dict:
    """Head-like scene: a few-mm Gaussians on a ~0.1 m ellipsoid, camera 0.8 m away."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(n, 3, generator=g)
    means = u / u.norm(dim=-1, keepdim=True) * torch.tensor([0.08, 0.11, 0.09])
    f = size * 0.8 / 0.26
    viewmats = torch.eye(4)[None].clone()
    viewmats[0, 2, 3] = 0.8
    scene = dict(
        means=means, quats=torch.randn(n, 4, generator=g),
        scales=torch.exp(torch.randn(n, 3, generator=g) * 0.4) * 0.004,
        opacities=torch.sigmoid(torch.randn(n, generator=g) * 1.5 + 1.0), colors=torch.rand(n, d, generator=g),
        viewmats=viewmats, Ks=torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]]),
    )
    out = {k: v.to(device) for k, v in scene.items()}
    out.update(width=size, height=size)
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for gsplat's kernels")
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("d", [3, 16])
def test_gsplat_matches_torch_on_cuda(size: int, d: int) -> None:
    """Same images, meta and gradients from gsplat's CUDA kernels and the torch backend."""
    pytest.importorskip("gsplat")
    scene = head_scene(2000, size, d, "cuda")
    scene["backgrounds"] = torch.rand(1, d, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    assert resolve_backend(None, torch.device("cuda")) == "gsplat"
    img_g, a_g, meta_g, g_g = run(lambda **kw: rasterization(**kw, backend="gsplat"), scene, render_mode="RGB+ED")
    img_t, a_t, meta_t, g_t = run(torch_fn, scene, render_mode="RGB+ED")
    assert meta_g["backend"] == "gsplat" and meta_t["backend"] == "torch"
    assert meta_g["radii"].shape == meta_t["radii"].shape and meta_g["radii"].dtype == meta_t["radii"].dtype
    assert (meta_g["radii"] == meta_t["radii"]).all(-1).float().mean() > 0.99  # ceil() may flip a few
    torch.testing.assert_close(meta_g["means2d"], meta_t["means2d"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(meta_g["depths"], meta_t["depths"], atol=1e-5, rtol=1e-5)
    assert (img_g[..., :d] - img_t[..., :d]).abs().mean() < 1e-3
    assert (a_g - a_t).abs().mean() < 1e-3
    assert (img_g[..., d] - img_t[..., d]).abs().mean() < 1e-3  # expected depth (m)
    for k in GRAD_KEYS:  # relative L2 error of each input's gradient
        err = (g_g[k] - g_t[k]).norm() / g_t[k].norm().clamp(min=1e-12)
        assert err < 0.05, (k, err.item())
