"""EWA projection of 3D Gaussians to screen space, matching gsplat 1.5.3's pinhole kernel.

Why: the torch backend and the dense reference must see exactly the 2D Gaussians gsplat's
``fully_fused_projection`` produces (same Jacobian clamping, eps2d blur, culling and radii), so
that switching backends changes speed, not results. Pure torch ops: differentiable, any device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: pairs below it are skipped
RADIUS_EXTEND = 3.33  # gsplat's radius multiplier of the 2D standard deviation


@dataclass
class Projection:
    """Per-(camera, Gaussian) screen-space quantities, all [C, N, ...].

    ``valid`` marks pairs that are rendered (radii > 0). ``opacities`` already include the
    antialiasing compensation when it was requested.
    """

    means2d: Tensor  # [C, N, 2] pixel coordinates
    conics: Tensor  # [C, N, 3] inverse blurred 2D covariance (a, b, c)
    depths: Tensor  # [C, N] camera-space z
    radii: Tensor  # [C, N, 2] int32, gsplat 1.5.3 convention (0 = culled)
    opacities: Tensor  # [C, N]
    valid: Tensor  # [C, N] bool


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from (not necessarily normalised) wxyz quaternions."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def project_gaussians(
    means: Tensor,
    quats: Optional[Tensor],
    scales: Optional[Tensor],
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    opacities: Optional[Tensor] = None,
    covars: Optional[Tensor] = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> Projection:
    """Project N Gaussians into C pinhole cameras (batched, differentiable).

    ``opacities`` [N], when given, tighten the radii like gsplat's CUDA kernel does
    (``extend = min(3.33, sqrt(2 ln(255 o)))``, culled below 1/255); without them the radii
    use the 3.33 sigma rule of ``gsplat.cuda._torch_impl._fully_fused_projection``.
    ``covars`` [N, 3, 3] replaces quats/scales when given.
    """
    C = viewmats.shape[0]
    Rv = viewmats[:, :3, :3]  # [C, 3, 3]
    tv = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", Rv, means) + tv[:, None, :]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)
    in_range = (z > near_plane) & (z < far_plane)
    z = torch.where(in_range, z, torch.ones_like(z))  # keeps culled entries finite (no NaN grads)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    # Rows of J·R_view (the EWA Jacobian composed with the world->camera rotation), [C, N, 3] each;
    # written elementwise because tiny batched matmuls are slow on CPU.
    r0, r1, r2 = Rv[:, None, 0, :], Rv[:, None, 1, :], Rv[:, None, 2, :]  # [C, 1, 3]
    jr0 = (fx * rz)[..., None] * r0 - (fx * tx * rz * rz)[..., None] * r2
    jr1 = (fy * rz)[..., None] * r1 - (fy * ty * rz * rz)[..., None] * r2
    if covars is None:
        M = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3] = R S, Sigma = M M^T
        u0 = (jr0[..., :, None] * M).sum(-2)
        u1 = (jr1[..., :, None] * M).sum(-2)
        a, b, c = (u0 * u0).sum(-1), (u0 * u1).sum(-1), (u1 * u1).sum(-1)
    else:
        s0 = (jr0[..., :, None] * covars).sum(-2)
        s1 = (jr1[..., :, None] * covars).sum(-2)
        a, b, c = (s0 * jr0).sum(-1), 0.5 * ((s0 * jr1).sum(-1) + (s1 * jr0).sum(-1)), (s1 * jr1).sum(-1)
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    ok_det = det > 0
    det_safe = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    if opacities is None:
        opac = torch.ones_like(z)
    else:
        opac = opacities[None, :].expand(C, -1)
    if antialiased:
        opac = opac * torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))

    with torch.no_grad():
        if opacities is None:
            extend = torch.full_like(z, RADIUS_EXTEND)
            ok_opac = torch.ones_like(in_range)
        else:
            ok_opac = opac >= ALPHA_THRESHOLD
            extend = alpha_extent(opac).clamp(max=RADIUS_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(a.clamp(min=0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp(min=0)))
        mx, my = means2d[..., 0], means2d[..., 1]
        valid = (
            in_range & ok_det & ok_opac
            & ~((rx <= radius_clip) & (ry <= radius_clip))
            & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        )
        radii = torch.stack([rx, ry], dim=-1).masked_fill(~valid[..., None], 0).to(torch.int32)
    return Projection(means2d, conics, means_c[..., 2], radii, opac, valid)


def alpha_extent(opacities: Tensor) -> Tensor:
    """Mahalanobis radius beyond which ``opacity * exp(-sigma) < 1/255`` (0 when never visible)."""
    return torch.sqrt(2.0 * torch.log(opacities.clamp(min=ALPHA_THRESHOLD) * 255.0))


__all__ = ["ALPHA_THRESHOLD", "Projection", "alpha_extent", "project_gaussians", "quat_to_rotmat"]
