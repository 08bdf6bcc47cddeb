"""Starting points for the Gaussians when an export has no point cloud: a visual hull from the training mattes.

VHAP's exporter writes no ``points3d.ply``. Without a FLAME model file (whose canonical mesh is the better
start, ``reflect.model.flame``), ``model.gaussians.init=visual_hull`` carves a voxel grid in the head's own
frame: each training frame's
rigid head pose (``R(rotation) R(neck_pose)``, ``translation``, as the rigid head model moves Gaussians) maps
the grid into the world, the frame's camera projects it, and a voxel that lands on background in enough
frames is carved away. The head turns between frames, so frames from two fixed cameras see it from more
directions than the cameras alone; the surface voxels of what is left are the points.

Not the default, by measurement: on the VHAP-flavoured synthetic head (64 px, 150 timesteps, cameras at
+-12 degrees, head yaw within about +-17 degrees) the hull's points lie a median 13.8 mm from the true surface
(7.3 mm on the face side) and come within 1 cm of 72% of it, against 6.6 mm and 55% for the head-sized
ellipsoid: the back of the head, never seen against the background, stays uncarved; a 600-step quick run
started from the hull reached 28.21 dB validation PSNR against 28.43 dB from the ellipsoid (one seed each).
With cameras around the head (NeRSemble's 16) the hull closes; ``init=auto`` stays ``points3d.ply`` or the
ellipsoid.

Why hand-written: the carving is ~30 lines of tensor code over Reflect's own frames and poses; the libraries
that carve (Open3D, kaolin) bring large native dependencies for this one step.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

HALF_EXTENT_M = 0.16  # the grid covers [-0.16, 0.16]^3 m around the head's origin (a head is ~0.2 m across)
GRID = 48  # voxels per axis (6.7 mm each)
MAX_FRAMES = 64
CARVE_FRACTION = 0.1  # a voxel on background in more than this share of the frames that see it is carved


def _head_rotation(rotation: torch.Tensor, neck_pose: torch.Tensor) -> torch.Tensor:
    """R(rotation) R(neck_pose) [3,3], the rigid head model's pose (the data's own axis-angle conversion)."""
    from reflect.data.synthetic_render import axis_angle_to_matrix

    rot = axis_angle_to_matrix(rotation.double().numpy()) @ axis_angle_to_matrix(neck_pose.double().numpy())
    return torch.as_tensor(rot, dtype=torch.float32)


def visual_hull_points(dataset: Any, n: int = 10000, seed: int = 0) -> Optional[np.ndarray]:
    """Surface points [P,3] (head-local metres) of the visual hull of ``dataset``'s training frames, or None.

    Args:
        dataset: an ``AvatarDataset`` (its items' ``alpha``, ``viewmat``, ``K``, ``rotation``, ``neck_pose``,
            ``translation``).
        n: at most this many points.
        seed: the sampling's seed.
    Returns:
        The points, or None when the frames carry no matte (all alpha 1: nothing to carve) or the hull is empty.
    """
    frames = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), MAX_FRAMES)).round().astype(int))
    axis = (torch.arange(GRID, dtype=torch.float32) + 0.5) / GRID * 2 * HALF_EXTENT_M - HALF_EXTENT_M
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)  # [G^3, 3]
    seen = torch.zeros(len(grid))
    outside = torch.zeros(len(grid))
    any_matte = False
    for index in frames:
        item = dataset[int(index)]
        alpha = item["alpha"][0]  # [H,W]
        if bool((alpha < 0.5).any()):
            any_matte = True
        rot = _head_rotation(item["rotation"], item["neck_pose"])
        world = grid @ rot.T + item["translation"]
        viewmat, K = item["viewmat"], item["K"]
        cam = world @ viewmat[:3, :3].T + viewmat[:3, 3]
        z = cam[:, 2].clamp_min(1e-6)
        u = K[0, 0] * cam[:, 0] / z + K[0, 2]
        v = K[1, 1] * cam[:, 1] / z + K[1, 2]
        h, w = alpha.shape
        inside = (cam[:, 2] > 1e-3) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        px = u.clamp(0, w - 1).long()
        py = v.clamp(0, h - 1).long()
        background = alpha[py, px] < 0.5
        seen += inside.float()
        outside += (inside & background).float()
    if not any_matte:
        return None
    kept = (seen > 0) & (outside <= CARVE_FRACTION * seen)
    if not kept.any():
        return None
    solid = kept.reshape(GRID, GRID, GRID)
    padded = torch.nn.functional.pad(solid.float()[None, None], (1, 1, 1, 1, 1, 1))[0, 0]
    neighbours = sum(padded[1 + dx:GRID + 1 + dx, 1 + dy:GRID + 1 + dy, 1 + dz:GRID + 1 + dz]
                     for dx, dy, dz in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)))
    surface = (solid & (neighbours < 6)).reshape(-1)
    centres = grid[surface]
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(centres), (n,), generator=g) if len(centres) < n else torch.randperm(
        len(centres), generator=g)[:n]
    voxel = 2 * HALF_EXTENT_M / GRID
    points = centres[picks] + (torch.rand(len(picks), 3, generator=g) - 0.5) * voxel
    return points.numpy().astype(np.float32)
