"""The Gaussian head avatar every ablation trains.

canonical Gaussians (+ latent features) → DeformMLP(expression) → FLAME rigid
head pose → rasterize the latents (``reflect.render``) → screen-space CNN → RGB.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reflect.model.config import ModelConfig
from reflect.model.decoder import ScreenSpaceDecoder, conditioning_dims
from reflect.model.deform import (
    DeformMLP,
    axis_angle_to_matrix,
    expression_input,
    matrix_to_quat,
    quat_multiply,
)
from reflect.render import rasterization

if TYPE_CHECKING:
    from reflect.model.flame import FlameSkeleton

# A head-sized ellipsoid (metres, FLAME scale) for real data without points3d.ply.
HEAD_ELLIPSOID_RADII = (0.08, 0.1, 0.09)
# What moves the Gaussians without a FLAME model file, as recorded in every trial's protocol: a rigid head (FLAME's
# global rotation composed with neck_pose, about the origin, then translation) with the DeformMLP's offsets.
HEAD_MODEL = "rigid: R(rotation) R(neck_pose) about the origin + translation, DeformMLP offsets"


def to_world(posed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``GaussianAvatar.posed_gaussians``' output moved into the world (without its ``pose``)."""
    gs = dict(posed)
    pose = gs.pop("pose")
    if pose is not None:  # the rigid head: from head space into the world
        rot, translation = pose[:, :3, :3], pose[:, :3, 3]
        gs["means"] = gs["means"] @ rot.transpose(1, 2) + translation[:, None, :]
        gs["quats"] = quat_multiply(matrix_to_quat(rot)[:, None, :], gs["quats"])
    return gs


def render_viewmats(batch: dict, posed: dict[str, torch.Tensor]) -> torch.Tensor:
    """The cameras [B,4,4] of the space ``posed`` Gaussians are in: the rigid head's pose in the view matrix."""
    return batch["viewmat"] if posed["pose"] is None else batch["viewmat"] @ posed["pose"]


def head_model(cfg: ModelConfig) -> str:
    """The protocol's description of what moves the Gaussians under ``cfg``."""
    if cfg.flame.model_path:
        from reflect.model.flame import flame_model_fingerprint

        return (f"flame (model {flame_model_fingerprint(str(cfg.flame.model_path))}): Gaussians bound to the "
                "canonical mesh's triangles, skinned by FLAME's LBS (global, neck, jaw, eyes) with its blend "
                "shapes, DeformMLP residual offsets")
    return HEAD_MODEL


def ellipsoid_surface_points(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform-ish samples on the head ellipsoid (normalised Gaussian directions)."""
    d = torch.randn(n, 3, generator=generator)
    d = d / d.norm(dim=-1, keepdim=True)
    return d * torch.tensor(HEAD_ELLIPSOID_RADII)


def choose_init_points(points: Optional[np.ndarray], n: int, seed: int) -> torch.Tensor:
    """Pick n starting positions from the dataset's surface samples (or the ellipsoid)."""
    g = torch.Generator().manual_seed(seed)
    if points is None or len(points) == 0:
        return ellipsoid_surface_points(n, g)
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    if len(pts) >= n:
        return pts[torch.randperm(len(pts), generator=g)[:n]]
    idx = torch.randint(len(pts), (n,), generator=g)
    spread = (pts.max(0).values - pts.min(0).values).norm() * 1e-3
    return pts[idx] + torch.randn(n, 3, generator=g) * spread


def mean_neighbour_distance(points: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """Per-point mean distance to its k nearest neighbours (chunked to bound memory)."""
    out = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], points)
        out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(-1))
    return torch.cat(out)


class GaussianAvatar(nn.Module):
    """The head avatar: canonical Gaussians with per-Gaussian latents, an expression DeformMLP, the head's pose
    (rigid, or FLAME's skinning), the rasterizer (``reflect.render``) and the screen-space decoder.
    ``forward(batch, width, height)`` renders a batch of frames; see its docstring for the outputs."""

    def __init__(
        self,
        cfg: ModelConfig,
        init_points: Optional[np.ndarray],
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        render_backend: Optional[str] = None,
        eps2d: float = 0.3,
        seed: int = 0,
        flame: Optional["FlameSkeleton"] = None,
    ):
        """Args: cfg: the model's settings; init_points: canonical surface samples [P,3] (points3d.ply) or None
        (the ellipsoid); background: RGB; render_backend/eps2d: the rasterizer's; seed: initialisation;
        flame: the FLAME skeleton (``reflect.model.flame``) — the Gaussians then start on its canonical mesh,
        bound to its triangles, and follow its skinning — or None for the rigid head."""
        super().__init__()
        self.cfg = cfg
        self.render_backend = render_backend
        self.eps2d = eps2d
        g = cfg.gaussians
        self.flame = flame
        if flame is not None:
            means, face_index, bary = flame.sample_surface(g.num_gaussians, torch.Generator().manual_seed(seed))
            self.register_buffer("face_index", face_index)
            self.register_buffer("bary", bary)
        else:
            means = choose_init_points(init_points, g.num_gaussians, seed)
        nn_dist = mean_neighbour_distance(means).clamp_min(1e-5)
        init_scale = torch.full_like(nn_dist, g.init_scale) if g.init_scale > 0 else nn_dist
        gen = torch.Generator().manual_seed(seed + 1)
        self.means = nn.Parameter(means)
        self.log_scales = nn.Parameter(torch.log(init_scale)[:, None].repeat(1, 3))
        self.quats = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(len(means), 1))
        self.opacity_logits = nn.Parameter(torch.full((len(means),), float(np.log(g.init_opacity / (1 - g.init_opacity)))))
        self.latents = nn.Parameter(0.1 * torch.randn(len(means), g.latent_dim, generator=gen))
        self.deform = DeformMLP(cfg.deform, g.latent_dim) if cfg.deform.enabled else None
        self.decoder = ScreenSpaceDecoder(cfg.decoder, in_channels=g.latent_dim + 1)
        self.register_buffer("background", torch.tensor(background, dtype=torch.float32), persistent=False)

    # --- bookkeeping -----------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups for per-group learning rates and freeze windows.

        means/scales/rotations/opacities are the "base Gaussians" (alias ``gaussians`` in freeze windows).
        """
        groups = {
            "means": [self.means],
            "scales": [self.log_scales],
            "rotations": [self.quats],
            "opacities": [self.opacity_logits],
            "latents": [self.latents],
            "decoder": list(self.decoder.parameters()),
        }
        if self.deform is not None:
            groups["deform"] = list(self.deform.parameters())
        return groups

    def count_parameters(self) -> dict[str, int]:
        """Trainable parameters per component (the roadmap quotes costs such as '~18K for the 6th conv')."""
        counts = {name: sum(p.numel() for p in ps) for name, ps in self.parameter_groups().items()}
        counts["total"] = sum(counts.values())
        return counts

    # --- forward ---------------------------------------------------------------------
    def deformed_gaussians(self, batch: dict) -> dict[str, torch.Tensor]:
        """World-space Gaussians for each frame of the batch ([B,N,...])."""
        return to_world(self.posed_gaussians(batch))

    def posed_gaussians(self, batch: dict) -> dict[str, torch.Tensor]:
        """Each frame's Gaussians ([B,N,...]) in the space they are rendered from, and that space's ``pose``.

        ``pose`` [B,4,4] maps that space into the world, or is None when it is the world. The rigid head's
        Gaussians stay in head space and its pose goes into the camera (``forward`` renders them with
        viewmat @ pose): the same camera-space Gaussians up to float rounding, without transforming N means
        and quaternions per frame forward and backward (0.4 ms a quick-profile step, measured).
        """
        b = batch["expr"].shape[0]
        means = self.means[None].expand(b, -1, -1)
        quats = F.normalize(self.quats, dim=-1)[None].expand(b, -1, -1)
        log_scales = self.log_scales[None].expand(b, -1, -1)
        offsets = torch.zeros_like(means)
        if self.deform is not None:
            expr = expression_input(batch, self.cfg.deform.expr_dims)
            d_pos, d_quat, d_logscale = self.deform(self.latents, self.means, expr)
            offsets = d_pos
            means = means + d_pos
            quats = quat_multiply(F.normalize(d_quat, dim=-1), quats)
            log_scales = log_scales + d_logscale
        # The rigid head model (no FLAME model file): FLAME's global rotation composed with the neck's, whose
        # head-to-torso motion VHAP tracks in neck_pose, both about the origin (HEAD_MODEL).
        rot = axis_angle_to_matrix(batch["rotation"]) @ axis_angle_to_matrix(batch["neck_pose"])
        pose: Optional[torch.Tensor] = None
        if self.flame is not None:
            from reflect.model.flame import bound_transforms, orthonormal

            transforms, displacement = self.flame.pose(batch["expr"], batch["rotation"], batch["neck_pose"],
                                                       batch["jaw_pose"], batch["eyes_pose"],
                                                       batch.get("dynamic_offset"))
            skin, shift = bound_transforms(transforms, displacement, self.flame.faces, self.face_index, self.bary)
            canonical = means + shift  # blend shapes of the bound triangle, then the DeformMLP's residual
            means = ((skin[..., :3, :3] @ canonical[..., None])[..., 0] + skin[..., :3, 3]
                     + batch["translation"][:, None, :])
            quats = quat_multiply(matrix_to_quat(orthonormal(skin[..., :3, :3])), quats)
        else:
            pose = torch.eye(4, dtype=rot.dtype, device=rot.device).repeat(b, 1, 1)
            pose[:, :3, :3] = rot
            pose[:, :3, 3] = batch["translation"]
        return {
            "means": means,
            "quats": quats,
            "scales": torch.exp(log_scales),
            "opacities": torch.sigmoid(self.opacity_logits),
            "offsets": offsets,
            "rot": rot,
            "pose": pose,
        }

    def view_directions(self, batch: dict, rot: torch.Tensor) -> torch.Tensor:
        """Unit direction from the head to the camera, in the head's own frame (pose-invariant)."""
        rel = batch["cam_center"] - batch["translation"]
        local = (rot.transpose(1, 2) @ rel[..., None])[..., 0]
        return F.normalize(local, dim=-1)

    def forward(self, batch: dict, width: int, height: int) -> dict[str, torch.Tensor]:
        """Render the batch's frames at (width, height): rgb [B,3,H,W] in [0,1] plus aux tensors."""
        s = self.cfg.decoder.sr_scale
        if width % s or height % s:
            raise ValueError(f"image size {width}x{height} is not divisible by model.decoder.sr_scale={s}")
        w, h = width // s, height // s
        gs = self.posed_gaussians(batch)
        viewmats = render_viewmats(batch, gs)
        ks = batch["K"].clone()
        ks[:, :2, :] = ks[:, :2, :] / s
        feats, alphas = [], []
        for i in range(batch["expr"].shape[0]):  # one rasterization per frame: each has its own deformed Gaussians
            colors, alpha, _ = rasterization(
                gs["means"][i], gs["quats"][i], gs["scales"][i], gs["opacities"], self.latents,
                viewmats[i : i + 1], ks[i : i + 1], w, h,
                eps2d=self.eps2d, backend=self.render_backend,
            )
            feats.append(colors[0])
            alphas.append(alpha[0])
        feat = torch.stack(feats).permute(0, 3, 1, 2)
        alpha = torch.stack(alphas).permute(0, 3, 1, 2)
        e = self.cfg.decoder.expr_dims
        expr_code = torch.cat([batch["expr"][:, :e], batch["jaw_pose"]], dim=-1)
        assert expr_code.shape[-1] == conditioning_dims(self.cfg.decoder)
        logits = self.decoder(torch.cat([feat, alpha], dim=1), expr_code, self.view_directions(batch, gs["rot"]))
        full_alpha = F.interpolate(alpha, scale_factor=s, mode="bilinear", align_corners=False) if s > 1 else alpha
        rgb = torch.sigmoid(logits) * full_alpha + self.background[None, :, None, None] * (1 - full_alpha)
        return {"rgb": rgb, "alpha": full_alpha, "offsets": gs["offsets"], "scales": gs["scales"]}
