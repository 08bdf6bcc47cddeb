"""Expression deformation of the canonical Gaussians, then FLAME's rigid head pose."""
from __future__ import annotations

import torch
from torch import nn

from reflect.model.config import DeformConfig


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, [B,3] → [B,3,3], smooth at zero angle."""
    theta = aa.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    k = aa / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    kmat = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], dim=-1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(kmat)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return eye + s * kmat + (1 - c) * (kmat @ kmat)


def matrix_to_quat(r: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [...,3,3] → unit quaternions wxyz [...,4] (robust branch-free form)."""
    m = r
    w = 0.5 * torch.sqrt((1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]).clamp_min(1e-12))
    x = 0.5 * torch.sqrt((1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2]).clamp_min(1e-12))
    y = 0.5 * torch.sqrt((1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2]).clamp_min(1e-12))
    z = 0.5 * torch.sqrt((1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]).clamp_min(1e-12))
    x = torch.copysign(x, m[..., 2, 1] - m[..., 1, 2])
    y = torch.copysign(y, m[..., 0, 2] - m[..., 2, 0])
    z = torch.copysign(z, m[..., 1, 0] - m[..., 0, 1])
    return torch.stack([w, x, y, z], dim=-1)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of wxyz quaternions (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def expression_input(batch: dict, expr_dims: int) -> torch.Tensor:
    """FLAME code the deformation sees: leading expr components, jaw pose, eye poses → [B, expr_dims+9]."""
    return torch.cat([batch["expr"][:, :expr_dims], batch["jaw_pose"], batch["eyes_pose"]], dim=-1)


class DeformMLP(nn.Module):
    """Per-Gaussian offsets (position, rotation, log-scale) from latent + position + expression.

    The last layer starts at zero so training begins from the canonical head.
    """

    def __init__(self, cfg: DeformConfig, latent_dim: int):
        super().__init__()
        self.cfg = cfg
        in_dim = latent_dim + 3 + cfg.expr_dims + 9
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(cfg.layers):
            layers += [nn.Linear(d, cfg.hidden), nn.SiLU()]
            d = cfg.hidden
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(d, 3 + 4 + 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Offsets are predicted in millimetres-ish units so the MLP works at O(1) scale.
        self.offset_scale = 0.01

    def forward(self, latents: torch.Tensor, means: torch.Tensor, expr: torch.Tensor):
        """latents [N,F], means [N,3], expr [B,E] → d_pos [B,N,3], d_quat [B,N,4], d_logscale [B,N,3]."""
        per_gauss = torch.cat([latents, means * 10.0], dim=-1)  # [N, F+3]
        # The first layer of [per_gauss, expr] splits into a per-Gaussian part, shared by the frames,
        # and a per-frame part, shared by the Gaussians: the same sums (up to rounding) at 1/B of
        # the per-Gaussian cost, and no [B, N, F+3+E] input is ever built.
        first = self.trunk[0]
        split = per_gauss.shape[-1]
        hidden = per_gauss @ first.weight[:, :split].T  # [N, hidden]
        per_frame = torch.addmm(first.bias, expr, first.weight[:, split:].T)  # [B, hidden]
        x = hidden[None] + per_frame[:, None, :]  # [B, N, hidden]
        out = self.head(self.trunk[1:](x))
        d_pos = out[..., :3] * self.offset_scale
        d_quat = out[..., 3:7] + torch.tensor([1.0, 0.0, 0.0, 0.0], device=out.device, dtype=out.dtype)
        d_logscale = out[..., 7:]
        return d_pos, d_quat, d_logscale
