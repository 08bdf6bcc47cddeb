"""The embedded synthetic head: a procedural, FLAME-parameterised head rendered into GaussianAvatars' layout.

Why it exists: the harness must run end to end with no capture data, and the data path it exercises must be
the real one, so the generator writes exactly the files a VHAP/GaussianAvatars export has (transforms_*.json
with OpenGL camera-to-world matrices, RGBA PNGs, flame_param/*.npz, canonical_flame_param.npz, points3d.ply)
and the real reader loads them.

The ground truth is an analytic ray tracer (torch, vectorised over frames and rays): a head of ellipsoids
(cranium, mid-face, upper lip, jaw rotating with ``jaw_pose[0]``, nose, ears, eyeballs, neck, a dark mouth
cavity with upper teeth) under the rigid FLAME pose ``world = R(rotation) @ x_head + translation``, with a
procedural texture in head-local coordinates (skin mottling, pores, freckles, brows, lips, irises, lids,
hair strands) and expression-driven wrinkles whose darkness depends on the expression value, not on geometry:

* ``expr[0]`` smile: mouth wider, corners up; nasolabial folds and cheek blush appear (negative: corners down);
* ``expr[1]`` brow raise: brows move up; three horizontal forehead wrinkles appear;
* ``expr[2]`` squint: lids close in, brows lower; crow's-feet lines appear at the outer eye corners;
* ``jaw_pose[0]`` (radians, positive opens): the jaw rotates down about the temporomandibular pivot,
  revealing the dark mouth interior and the upper teeth;
* ``eyes_pose`` (axis-angle per eye): gaze; ``expr[3:]`` small smooth values with no effect.

A later capture session (``session`` ≥ 1, ``SyntheticHeadConfig.sessions``) is the same head captured again:
key light from the other side with a warm tint, head motion 1.8× and expression range 1.35× wider, and 12% of
its train timesteps mis-tracked (their FLAME parameters are another timestep's, as when a tracker fails on
a frame); ``allowlist.txt`` lists the timesteps that are not, as a curated capture's allowlist would.

Conventions: metres, head centred near the origin (radius ~0.09 m), face toward +z, y up. Three cameras at
``camera_distance`` looking at the head: 0 and 1 at ±``stereo_yaw_deg`` (train/test), 2 frontal (val).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from reflect.data.config import SyntheticHeadConfig
from reflect.data.ply import write_ply_points

GENERATOR_VERSION = "2"  # bump whenever the generator's output changes: it keys the cache and the fingerprint
N_EXPR = 100
CAMERA_TARGET = (0.0, -0.01, 0.0)
CHUNK_FRAMES = 8
REGION_NAMES = ("wrinkles",)  # the region masks every frame carries (``region_mask_paths``)

# Ellipsoids in head-local coordinates: (name, centre, radii, material, moves with the jaw).
# Materials: 0 skin, 1 left eye, 2 right eye, 3 mouth cavity.
_PRIMS: list[tuple[str, tuple[float, float, float], tuple[float, float, float], int, bool]] = [
    ("cranium", (0.0, 0.025, -0.012), (0.074, 0.088, 0.088), 0, False),
    ("midface", (0.0, 0.005, 0.018), (0.066, 0.045, 0.078), 0, False),
    ("upper_lip", (0.0, -0.028, 0.05), (0.03, 0.014, 0.038), 0, False),
    ("nose", (0.0, -0.004, 0.086), (0.010, 0.022, 0.017), 0, False),
    ("nose_tip", (0.0, -0.016, 0.096), (0.011, 0.009, 0.009), 0, False),
    ("ear_l", (0.073, 0.005, -0.01), (0.010, 0.028, 0.017), 0, False),
    ("ear_r", (-0.073, 0.005, -0.01), (0.010, 0.028, 0.017), 0, False),
    ("neck", (0.0, -0.1, -0.015), (0.048, 0.07, 0.05), 0, False),
    ("jaw", (0.0, -0.05, 0.008), (0.058, 0.048, 0.07), 0, True),
    ("eye_l", (0.03, 0.022, 0.072), (0.0135, 0.0135, 0.0135), 1, False),
    ("eye_r", (-0.03, 0.022, 0.072), (0.0135, 0.0135, 0.0135), 2, False),
    ("cavity", (0.0, -0.045, 0.04), (0.028, 0.02, 0.032), 3, False),
]
_JAW_PIVOT = (0.0, -0.015, -0.03)
_EYE_CENTRES = ((0.03, 0.022, 0.072), (-0.03, 0.022, 0.072))


def axis_angle_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for [..., 3] axis-angle vectors → [..., 3, 3] rotation matrices."""
    v = np.asarray(v, dtype=np.float64)
    theta = np.linalg.norm(v, axis=-1, keepdims=True)
    k = v / np.maximum(theta, 1e-12)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(*v.shape[:-1], 3, 3)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * kmat + (1 - c) * (kmat @ kmat)


# --------------------------------------------------------------------------------------------- sequence


def _smooth(rng: np.random.Generator, t: np.ndarray, n_waves: int = 3) -> np.ndarray:
    """A smooth signal in [-1, 1]: a sum of sinusoids with periods of 12-70 timesteps."""
    periods = rng.uniform(12.0, 70.0, n_waves)
    phases = rng.uniform(0.0, 2 * np.pi, n_waves)
    amps = rng.uniform(0.5, 1.0, n_waves)
    s = (amps[:, None] * np.sin(2 * np.pi * t[None] / periods[:, None] + phases[:, None])).sum(0)
    return s / amps.sum()


@dataclasses.dataclass(frozen=True)
class SessionLook:
    """How one capture session differs: lighting, and how far the head and face move."""

    key_light: tuple[float, float, float] = (-0.45, 0.55, 0.7)
    fill_light: tuple[float, float, float] = (0.7, -0.1, 0.7)
    tint: Optional[tuple[float, float, float]] = None  # multiplies the diffuse light (None: white)
    motion: float = 1.0  # scales head rotation and translation
    expression_range: float = 1.0  # scales the smile/brow/squint excursions and the jaw
    glitch_fraction: float = 0.0  # share of train timesteps whose stored FLAME parameters are another's


SESSION_LOOKS = (
    SessionLook(),
    SessionLook(key_light=(0.55, 0.45, 0.7), fill_light=(-0.7, 0.0, 0.7), tint=(1.0, 0.9, 0.78), motion=1.8,
                expression_range=1.35, glitch_fraction=0.12),
    SessionLook(key_light=(0.0, 0.8, 0.6), fill_light=(0.0, -0.5, 0.8), tint=(0.86, 0.92, 1.0), motion=1.5,
                expression_range=1.2, glitch_fraction=0.08),
)


def make_sequence(cfg: SyntheticHeadConfig, session: int = 0) -> dict[str, np.ndarray]:
    """FLAME parameters for every timestep (train first, then the held-out test block) and the rare mask."""
    look = SESSION_LOOKS[session]
    rng = np.random.default_rng([cfg.seed, 1] if session == 0 else [cfg.seed, 1, session])
    n = cfg.n_train_timesteps + cfg.n_test_timesteps
    t = np.arange(n, dtype=np.float64)
    expr = np.zeros((n, N_EXPR))
    wide = look.expression_range
    expr[:, 0] = 0.45 + 0.75 * wide * _smooth(rng, t)  # smile, about [-0.3, 1.2] in session 0
    expr[:, 1] = 0.40 + 0.80 * wide * _smooth(rng, t)  # brow raise, about [-0.4, 1.2]
    expr[:, 2] = 0.30 + 0.50 * wide * _smooth(rng, t)  # squint, about [-0.2, 0.8]
    periods = rng.uniform(10.0, 60.0, N_EXPR - 3)
    phases = rng.uniform(0.0, 2 * np.pi, N_EXPR - 3)
    expr[:, 3:] = 0.15 * np.sin(2 * np.pi * t[:, None] / periods + phases)  # no visual effect
    jaw = np.zeros((n, 3))
    jaw[:, 0] = np.clip(0.07 + 0.13 * wide * _smooth(rng, t), 0.0, None)
    eyes = np.zeros((n, 6))
    gaze_pitch, gaze_yaw = 0.12 * _smooth(rng, t), 0.2 * _smooth(rng, t)
    eyes[:, 0] = eyes[:, 3] = gaze_pitch
    eyes[:, 1] = eyes[:, 4] = gaze_yaw
    m = look.motion
    rotation = m * np.stack([0.15 * _smooth(rng, t), 0.30 * _smooth(rng, t), 0.08 * _smooth(rng, t)], axis=1)
    translation = m * np.stack([0.01 * _smooth(rng, t), 0.008 * _smooth(rng, t), 0.005 * _smooth(rng, t)], axis=1)

    rare = np.zeros(n, dtype=bool)
    n_rare = int(round(cfg.rare_fraction * cfg.n_train_timesteps))
    if n_rare:
        idx = rng.choice(cfg.n_train_timesteps, size=n_rare, replace=False)
        rare[idx] = True
        jaw[idx, 0] = rng.uniform(0.40, 0.50, n_rare)
        expr[idx, 0] = rng.uniform(2.0, 2.8, n_rare)
        expr[idx, 1] = rng.uniform(2.0, 2.6, n_rare)
    # Mis-tracked timesteps (later sessions): the stored parameters are those of a timestep far away, while the
    # image shows the true pose; ``tracked_as[t]`` is the timestep whose parameters are stored for t.
    tracked_as = np.arange(n)
    n_glitch = int(round(look.glitch_fraction * cfg.n_train_timesteps))
    if n_glitch:
        candidates = np.flatnonzero(~rare[:cfg.n_train_timesteps])
        glitched = np.sort(rng.choice(candidates, size=min(n_glitch, len(candidates)), replace=False))
        tracked_as[glitched] = (glitched + cfg.n_train_timesteps // 2) % cfg.n_train_timesteps
    return {"expr": expr, "jaw_pose": jaw, "eyes_pose": eyes, "neck_pose": np.zeros((n, 3)),
            "rotation": rotation, "translation": translation, "rare": rare, "tracked_as": tracked_as}


def split_neck_motion(seq: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same head poses with part of the motion in ``neck_pose``, as VHAP tracks it: the neck takes 40% of
    each pose's rotation and ``rotation`` keeps the rest, so R(rotation) R(neck_pose) is the pose unchanged."""
    total = axis_angle_to_matrix(seq["rotation"])
    neck = 0.4 * seq["rotation"]
    rest = total @ np.swapaxes(axis_angle_to_matrix(neck), -1, -2)
    return {**seq, "rotation": matrix_to_axis_angle(rest), "neck_pose": neck}


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices (angles below pi) → [..., 3] axis-angle vectors."""
    cos = np.clip((np.trace(m, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    axis = np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    scale = np.where(theta > 1e-8, theta / np.maximum(2.0 * np.sin(theta), 1e-12), 0.5)
    return axis * scale[..., None]


def make_cameras(cfg: SyntheticHeadConfig) -> tuple[np.ndarray, float]:
    """OpenGL camera-to-world matrices [3, 4, 4] (left, right, frontal) and the focal length in pixels."""
    target = np.array(CAMERA_TARGET)
    c2ws = []
    for yaw_deg in (cfg.stereo_yaw_deg, -cfg.stereo_yaw_deg, 0.0):
        yaw, pitch = math.radians(yaw_deg), math.radians(3.0)
        eye = target + cfg.camera_distance * np.array(
            [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
        back = (eye - target) / np.linalg.norm(eye - target)  # OpenGL cameras look down -z
        right = np.cross([0.0, 1.0, 0.0], back)
        right /= np.linalg.norm(right)
        up = np.cross(back, right)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye
        c2ws.append(c2w)
    focal = cfg.image_size * cfg.camera_distance / cfg.field_of_view_m
    return np.stack(c2ws), focal


# --------------------------------------------------------------------------------------------- renderer


def _smoothstep(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    u = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return u * u * (3 - 2 * u)


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-((x / sigma) ** 2))


class ProceduralHead:
    """The procedural head: ray-ellipsoid intersection, texture and shading (all vectorised)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 2])
        self.centres = torch.tensor([p[1] for p in _PRIMS], dtype=torch.float32)
        self.radii = torch.tensor([p[2] for p in _PRIMS], dtype=torch.float32)
        self.material = torch.tensor([p[3] for p in _PRIMS])
        self.on_jaw = torch.tensor([p[4] for p in _PRIMS])
        self.pivot = torch.tensor(_JAW_PIVOT, dtype=torch.float32)

        def waves(n: int, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
            d = rng.normal(size=(3, n))
            d /= np.linalg.norm(d, axis=0, keepdims=True)
            w = d * rng.uniform(lo, hi, n)  # angular frequencies in rad/m
            return torch.tensor(w, dtype=torch.float32), torch.tensor(rng.uniform(0, 2 * np.pi, n), dtype=torch.float32)

        self.mottle = waves(12, 250.0, 700.0)  # 9-25 mm blotches
        self.pores = waves(16, 1500.0, 3200.0)  # 2-4 mm grain
        self.freckles = waves(10, 900.0, 1500.0)
        self.hair = waves(8, 2500.0, 4500.0)

    @staticmethod
    def _noise(q: torch.Tensor, w: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Sum of plane waves, normalised to about [-1, 1]."""
        return torch.sin(q @ w[0] + w[1]).sum(-1) / math.sqrt(w[0].shape[1] * 0.5) / 2.0

    def trace(self, o_h: torch.Tensor, d_h: torch.Tensor, jaw_rot: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest hit of rays (head-local [F,N,3]) with the ellipsoids.

        Returns (hit mask [F,N], primitive index [F,N], texture position q [F,N,3] — jaw primitives in
        jaw-canonical coordinates so their texture moves with the jaw — and the head-local normal [F,N,3]).
        """
        o_j = (o_h - self.pivot) @ jaw_rot + self.pivot  # jaw_rot^T applied to row vectors
        d_j = d_h @ jaw_rot
        ts = []
        for i in range(len(_PRIMS)):
            o, d = (o_j, d_j) if self.on_jaw[i] else (o_h, d_h)
            o_ = (o - self.centres[i]) / self.radii[i]
            d_ = d / self.radii[i]
            a = (d_ * d_).sum(-1)
            b = (o_ * d_).sum(-1)
            c = (o_ * o_).sum(-1) - 1.0
            disc = b * b - a * c
            t = (-b - disc.clamp_min(0.0).sqrt()) / a
            ts.append(torch.where((disc > 0) & (t > 0), t, torch.full_like(t, float("inf"))))
        tmin, idx = torch.stack(ts).min(0)
        hit = torch.isfinite(tmin)
        t = torch.where(hit, tmin, torch.zeros_like(tmin))[..., None]
        jaw_hit = self.on_jaw[idx][..., None]
        q = torch.where(jaw_hit, o_j + t * d_j, o_h + t * d_h)
        n = (q - self.centres[idx]) / self.radii[idx] ** 2
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        n = torch.where(jaw_hit, n @ jaw_rot.transpose(-1, -2), n)  # back to head-local
        return hit, idx, q, n

    def albedo(self, q: torch.Tensor, idx: torch.Tensor, p: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Albedo [M,3] at texture positions q [M,3] of primitives idx [M]; p holds per-ray expression values.

        Also returns the wrinkle zone [M] in [0,1] (see ``_skin``); eyes and mouth interior have none.
        """
        mat = self.material[idx]
        col, zone = self._skin(q, p)
        for side, m in ((0, 1), (1, 2)):
            sel = mat == m
            if sel.any():
                col[sel] = self._eye(q[sel], side, {k: v[sel] for k, v in p.items()})
        sel = mat == 3
        if sel.any():
            col[sel] = self._cavity(q[sel])
        return col, torch.where(mat == 0, zone, torch.zeros_like(zone))

    def _skin(self, q: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Skin albedo [M,3] and the wrinkle zone [M]: where this frame's expression lines lie, at full strength.

        The zone ignores each line's expression-dependent strength, so it marks the same skin whether the
        wrinkle shows or not: a decoder is scored there both for drawing wrinkles and for not inventing them.
        """
        x, y, z = q.unbind(-1)
        ax = x.abs()
        smile, brow, squint = p["smile"], p["brow"], p["squint"]
        front = _smoothstep(0.02, 0.05, z)
        col = torch.tensor([0.86, 0.66, 0.55]).expand(q.shape[0], 3).clone()
        col = col * (1 + 0.07 * self._noise(q, self.mottle) + 0.05 * self._noise(q, self.pores))[:, None]
        # cheeks blush with a smile
        blush = _gauss(torch.hypot(ax - 0.042, y + 0.012), 0.016) * front * (0.4 + 0.6 * smile.clamp(0, 2) / 2)
        col = col + blush[:, None] * torch.tensor([0.06, -0.05, -0.04])
        # freckles over nose and cheeks
        spots = _smoothstep(0.35, 0.6, self._noise(q, self.freckles))
        spots = spots * _gauss(y + 0.005, 0.02) * _gauss(x, 0.05) * _smoothstep(0.05, 0.07, z)
        col = col * (1 - spots[:, None] * torch.tensor([0.12, 0.18, 0.24]))
        # eye sockets and nostrils
        for ex, ey, _ in _EYE_CENTRES:
            col = col * (1 - 0.18 * _gauss(torch.hypot(x - ex, y - ey), 0.017) * front)[:, None]
        nostril = _gauss(torch.hypot(ax - 0.0065, y + 0.023), 0.0028) * _smoothstep(0.085, 0.095, z)
        col = col * (1 - 0.7 * nostril)[:, None]
        # forehead wrinkles: brow raise
        strength = 0.7 * (1 - torch.exp(-1.6 * brow.clamp_min(0)))
        lines = sum(_gauss(y - (0.054 + 0.0105 * k + 0.004 * brow) - 0.002 * torch.sin(70 * x + k), 0.0022)
                    for k in range(3))
        forehead = lines * _smoothstep(0.05, 0.035, ax) * front
        col = col * (1 - (strength * forehead).clamp(0, 0.85))[:, None]
        zone = forehead
        # nasolabial folds: smile
        strength = 0.65 * (1 - torch.exp(-1.6 * smile.clamp_min(0)))
        xf = 0.021 + 0.42 * (-0.006 - y) + 0.004 * smile
        fold = _gauss(ax - xf, 0.0022) * _smoothstep(-0.006, -0.012, y) * _smoothstep(-0.052, -0.044, y) * front
        col = col * (1 - strength * fold)[:, None]
        zone = zone + fold
        # crow's feet: squint
        strength = 0.6 * (1 - torch.exp(-2.0 * squint.clamp_min(0)))
        rx, ry = ax - 0.046, y - 0.021
        feet = torch.zeros_like(x)
        for ang in (-0.45, 0.0, 0.45):
            along = rx * math.cos(ang) + ry * math.sin(ang)
            perp = -rx * math.sin(ang) + ry * math.cos(ang)
            feet = feet + _gauss(perp, 0.0016) * _smoothstep(0.002, 0.005, along) * _smoothstep(0.02, 0.014, along)
        col = col * (1 - strength * feet.clamp(0, 1) * _smoothstep(0.0, 0.03, z))[:, None]
        zone = zone + feet.clamp(0, 1) * _smoothstep(0.0, 0.03, z)
        # brows: move up with brow raise, down with squint
        dx = ax - 0.031
        brow_y = 0.041 + 0.009 * brow - 0.004 * squint.clamp_min(0) - 14.0 * dx * dx
        brows = _smoothstep(0.004, 0.0025, (y - brow_y).abs()) * _smoothstep(0.024, 0.018, dx.abs()) * front
        col = torch.lerp(col, torch.tensor([0.22, 0.14, 0.09]).expand_as(col), brows[:, None] * 0.9)
        # lips: wider and corners up with a smile
        w = 0.022 * (1 + 0.25 * smile.clamp_min(0))
        u = (x / w).clamp(-1.2, 1.2)
        mouth_y = -0.0412 + 0.008 * smile * u * u
        shape = (1 - u * u).clamp_min(0).sqrt()
        upper = (y > mouth_y) & (y < mouth_y + 0.0065 * shape)
        lower = (y < mouth_y) & (y > mouth_y - 0.008 * shape)
        lips = (upper | lower).float() * _smoothstep(0.06, 0.075, z)
        col = torch.lerp(col, torch.tensor([0.72, 0.36, 0.37]).expand_as(col), lips[:, None] * 0.85)
        mouth_line = _gauss(y - mouth_y, 0.0013) * _smoothstep(1.15, 0.95, u.abs()) * _smoothstep(0.06, 0.075, z)
        col = col * (1 - 0.65 * mouth_line)[:, None]
        # hair cap with strands
        hairline = 0.086 - 0.12 * ((0.05 - z) / 0.1).clamp(0, 1)
        hair = _smoothstep(-0.002, 0.004, y - hairline - 0.004 * torch.sin(90 * x))
        strands = 0.75 + 0.25 * torch.sin(torch.atan2(x, z) * 140 + 12 * torch.sin(60 * y)) + 0.1 * self._noise(q, self.hair)
        hair_col = torch.tensor([0.2, 0.12, 0.07]) * strands[:, None]
        col = torch.lerp(col, hair_col, hair[:, None])
        return col.clamp(0, 1), (zone * (1 - hair)).clamp(0, 1)

    def _eye(self, q: torch.Tensor, side: int, p: dict[str, torch.Tensor]) -> torch.Tensor:
        v = q - torch.tensor(_EYE_CENTRES[side])
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        gaze = p["gaze_l"] if side == 0 else p["gaze_r"]
        cos = (v * gaze).sum(-1).clamp(-1, 1)
        ang = torch.acos(cos)
        col = torch.tensor([0.93, 0.91, 0.88]).expand(q.shape[0], 3).clone()
        col = col * (1 - 0.15 * _smoothstep(0.6, 1.2, ang))[:, None]  # sclera darkens toward the lids
        streaks = 0.85 + 0.15 * torch.sin(24 * torch.atan2(v[:, 1], v[:, 0]))
        iris = torch.tensor([0.32, 0.46, 0.55]) * streaks[:, None] * (1 - 0.4 * _smoothstep(0.35, 0.45, ang))[:, None]
        col = torch.where((ang < 0.45)[:, None], iris, col)
        col = torch.where((ang < 0.18)[:, None], torch.tensor([0.03, 0.03, 0.04]).expand_as(col), col)
        squint = p["squint"].clamp(-0.3, 2.0)
        upper_lid, lower_lid = 0.5 - 0.3 * squint, -0.55 + 0.2 * squint
        lid = (v[:, 1] > upper_lid) | (v[:, 1] < lower_lid)
        col = torch.where(lid[:, None], torch.tensor([0.74, 0.55, 0.46]).expand_as(col), col)
        lash = _gauss(v[:, 1] - upper_lid, 0.07)
        return col * (1 - 0.8 * lash)[:, None]

    @staticmethod
    def _cavity(q: torch.Tensor) -> torch.Tensor:
        x, y = q[:, 0], q[:, 1]
        col = torch.tensor([0.2, 0.06, 0.06]).expand(q.shape[0], 3) * (0.5 + 0.5 * _smoothstep(-0.065, -0.04, y))[:, None]
        gaps = 1 - 0.6 * _gauss(torch.sin(math.pi * x / 0.0048), 0.25)
        teeth = (y > -0.0445) & (x.abs() < 0.019)
        return torch.where(teeth[:, None], torch.tensor([0.9, 0.88, 0.82]) * gaps[:, None], col)

    def render(self, rays_o: torch.Tensor, rays_d: torch.Tensor, params: dict[str, torch.Tensor],
               look: SessionLook = SESSION_LOOKS[0]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shade rays (world [F,N,3]) of F frames under a session's lighting; returns colour [F,N,3], hit mask
        [F,N], wrinkle zone [F,N]."""
        rot, trans = params["R"], params["t"]  # [F,3,3], [F,3]
        o_h = (rays_o - trans[:, None]) @ rot  # R^T (x - t) as row vectors
        d_h = rays_d @ rot
        hit, idx, q, n_h = self.trace(o_h, d_h, params["jaw_R"])
        fi = torch.arange(rays_o.shape[0])[:, None].expand_as(hit)[hit]
        per_ray = {k: params[k][fi] for k in ("smile", "brow", "squint", "gaze_l", "gaze_r")}
        alb, zone_hit = self.albedo(q[hit], idx[hit], per_ray)
        n_w = (n_h[hit][:, None, :] @ rot[fi].transpose(-1, -2))[:, 0]
        view = -rays_d[hit]
        key = torch.tensor(look.key_light)
        key = key / key.norm()
        fill = torch.tensor(look.fill_light)
        fill = fill / fill.norm()
        lambert = 0.3 + 0.62 * (n_w @ key).clamp_min(0) + 0.18 * (n_w @ fill).clamp_min(0)
        diffuse = alb * lambert[:, None]
        if look.tint is not None:
            diffuse = diffuse * torch.tensor(look.tint)
        refl = 2 * (n_w @ key)[:, None] * n_w - key
        spec_w = torch.where(self.material[idx[hit]] == 0, 0.06, torch.where(self.material[idx[hit]] == 3, 0.0, 0.5))
        spec = spec_w * ((refl * view).sum(-1).clamp_min(0) ** 40)
        rgb = torch.zeros(*hit.shape, 3)
        rgb[hit] = (diffuse + spec[:, None]).clamp(0, 1)
        zone = torch.zeros(hit.shape)
        zone[hit] = zone_hit
        return rgb, hit, zone


def _frame_params(seq: dict[str, np.ndarray], ts: np.ndarray) -> dict[str, torch.Tensor]:
    """Renderer inputs for timesteps ts: head rotation/translation, jaw rotation, expression scalars, gazes."""
    jaw = seq["jaw_pose"][ts, 0]
    zeros = np.zeros_like(jaw)
    eyes = seq["eyes_pose"][ts]
    fwd = np.array([0.0, 0.0, 1.0])
    out = {
        "R": axis_angle_to_matrix(seq["rotation"][ts]) @ axis_angle_to_matrix(seq["neck_pose"][ts]),
        "t": seq["translation"][ts],
        "jaw_R": axis_angle_to_matrix(np.stack([jaw, zeros, zeros], axis=-1)),
        "smile": seq["expr"][ts, 0], "brow": seq["expr"][ts, 1], "squint": seq["expr"][ts, 2],
        "gaze_l": axis_angle_to_matrix(eyes[:, :3]) @ fwd, "gaze_r": axis_angle_to_matrix(eyes[:, 3:]) @ fwd,
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


def camera_rays(c2w_gl: np.ndarray, focal: float, size: int, ss: int,
                principal_point: Optional[tuple[float, float]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays through ss×ss sub-pixel centres (pixel centres at +0.5, as gsplat projects); the principal
    point (cx, cy) in pixels from the top-left, default the image centre."""
    c2w = c2w_gl @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV axes: x right, y down, z forward
    u = (np.arange(size * ss) + 0.5) / ss
    uu, vv = np.meshgrid(u, u, indexing="xy")
    cx, cy = principal_point if principal_point is not None else (size / 2.0, size / 2.0)
    d_cam = np.stack([(uu - cx) / focal, (vv - cy) / focal, np.ones_like(uu)], axis=-1).reshape(-1, 3)
    d = d_cam @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(c2w[:3, 3], d.shape)
    return torch.tensor(o, dtype=torch.float32), torch.tensor(d, dtype=torch.float32)


def render_frames(head: ProceduralHead, seq: dict[str, np.ndarray], ts: np.ndarray, cams: np.ndarray,
                  rays: list[tuple[torch.Tensor, torch.Tensor]], size: int, ss: int,
                  look: SessionLook = SESSION_LOOKS[0]) -> tuple[np.ndarray, np.ndarray]:
    """RGBA uint8 [F,H,W,4] (straight colour, alpha = sub-pixel coverage) for timesteps ts seen by cameras cams,
    and the wrinkle-region masks uint8 [F,H,W] (255 inside)."""
    params = _frame_params(seq, ts)
    o = torch.stack([rays[c][0] for c in cams])
    d = torch.stack([rays[c][1] for c in cams])
    rgb, hit, zone = head.render(o, d, params, look)
    f = len(ts)
    rgb = rgb.reshape(f, size, ss, size, ss, 3)
    cov = hit.float().reshape(f, size, ss, size, ss, 1)
    alpha = cov.mean(dim=(2, 4))
    colour = (rgb * cov).sum(dim=(2, 4)) / cov.sum(dim=(2, 4)).clamp_min(1e-6)
    rgba = torch.cat([colour, alpha], dim=-1)
    rgba_u8 = (rgba * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    return rgba_u8, wrinkle_region(zone.reshape(f, size, ss, size, ss), alpha[..., 0])


def wrinkle_region(zone: torch.Tensor, coverage: torch.Tensor) -> np.ndarray:
    """Binary masks uint8 [F,H,W] from sub-pixel zone values [F,H,ss,W,ss] and head coverage [F,H,W].

    A pixel is in the region when its mean zone exceeds 0.15 (a line crosses it), dilated by one pixel so that
    a decoder which blurs or shifts a line is scored on the pixels it smears it over, and kept on the head.
    """
    inside = (zone.mean(dim=(2, 4)) > 0.15).float()[:, None]
    inside = torch.nn.functional.max_pool2d(inside, kernel_size=3, stride=1, padding=1)[:, 0] * (coverage > 0)
    return (inside * 255).to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------- writing


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz with fixed zip timestamps, so regenerating gives identical bytes (np.savez stamps the time)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _surface_points(n: int, seed: int) -> np.ndarray:
    """Points [n,3] on the neutral head's outer surface: ellipsoid samples not inside another primitive."""
    rng = np.random.default_rng([seed, 3])
    centres = np.array([p[1] for p in _PRIMS])
    radii = np.array([p[2] for p in _PRIMS])
    solid = [j for j, p in enumerate(_PRIMS) if p[3] != 3]  # the mouth cavity is not surface
    pts = []
    for i in solid:
        r = radii[i]
        k = max(32, int(4e6 * (r[0] * r[1] + r[0] * r[2] + r[1] * r[2])))  # ~ proportional to area
        d = rng.normal(size=(k, 3))
        p = centres[i] + d / np.linalg.norm(d, axis=1, keepdims=True) * r
        inside = np.zeros(k, dtype=bool)
        for j in solid:
            if j != i:
                inside |= (((p - centres[j]) / radii[j]) ** 2).sum(1) < 1.0
        pts.append(p[~inside])
    pts = np.concatenate(pts)
    return pts[rng.choice(len(pts), size=min(n, len(pts)), replace=False)].astype(np.float32)


def _as_config(cfg: Any) -> SyntheticHeadConfig:
    """Accept the dataclass or an OmegaConf node of it."""
    if isinstance(cfg, SyntheticHeadConfig):
        return cfg
    from omegaconf import OmegaConf

    return SyntheticHeadConfig(**OmegaConf.to_container(cfg, resolve=True))


LOADER_FIELDS = ("sessions", "allowlist")  # how many sessions to load and how: not what a session contains
SESSION_ALLOWLIST = "allowlist.txt"


# Generator parameters added later, at the value every earlier dataset was made with: left out of the key there.
LATER_PARAMS_AT_DEFAULT = {"flavour": "gaussian_avatars"}
# The VHAP flavour's principal point, as fractions of the image size from the top-left (OpenCV): off-centre, so
# a reader that mixes up VHAP's bottom-origin cy misplaces every pixel.
VHAP_PRINCIPAL_POINT = (0.56, 0.45)


def config_key(cfg: Any, session: int = 0) -> str:
    """Hash of the generator's parameters and version for one session: its cache folder name.

    Session 0's key is what it was before sessions existed, so cached heads and results stay valid.
    """
    params = {k: v for k, v in dataclasses.asdict(_as_config(cfg)).items()
              if k not in LOADER_FIELDS and LATER_PARAMS_AT_DEFAULT.get(k, object()) != v}
    if session:
        params["session"] = session
    blob = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def synthetic_fingerprint(cfg: Any) -> str:
    """What the synthetic data of a config is: every loaded session's key, and whether allowlists apply."""
    cfg = _as_config(cfg)
    if cfg.sessions == 1:
        return config_key(cfg)
    keys = "+".join(config_key(cfg, s) for s in range(cfg.sessions))
    return f"{keys}:{'allowlist' if cfg.allowlist else 'every-frame'}"


def session_name(session: int) -> str:
    """The name session ``session`` (0-based) loads under: ``synthetic``, ``synthetic2``, ..."""
    return "synthetic" if session == 0 else f"synthetic{session + 1}"


def generate_synthetic_head(cfg: Any, out_dir: str | os.PathLike, progress: bool = True, session: int = 0) -> Path:
    """Write one session of the synthetic head into out_dir (created) in GaussianAvatars' layout; returns out_dir.

    Args:
        cfg: the generator's parameters (``SyntheticHeadConfig`` or an OmegaConf node of it).
        out_dir: the dataset folder to write.
        progress: show a progress bar on a terminal.
        session: 0 for the first capture session; 1 or 2 for a later one (see ``SESSION_LOOKS``), which also
            writes ``allowlist.txt`` (the timesteps whose tracking is right).
    """
    cfg = _as_config(cfg)
    cfg.validate()
    if not 0 <= session < len(SESSION_LOOKS):
        raise ValueError(f"session: expected 0..{len(SESSION_LOOKS) - 1}, got {session}")
    look = SESSION_LOOKS[session]
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "flame_param").mkdir(exist_ok=True)
    (out / "regions").mkdir(exist_ok=True)
    size, ss = cfg.image_size, cfg.supersample
    seq = make_sequence(cfg, session)
    vhap = cfg.flavour == "vhap"
    if vhap:
        seq = split_neck_motion(seq)
    c2ws, focal = make_cameras(cfg)
    head = ProceduralHead(cfg.seed)
    cx, cy = (VHAP_PRINCIPAL_POINT[0] * size, VHAP_PRINCIPAL_POINT[1] * size) if vhap else (size / 2.0, size / 2.0)
    rays = [camera_rays(c2w, focal, size, ss, (cx, cy)) for c2w in c2ws]
    if vhap:
        (out / "fg_masks").mkdir(exist_ok=True)

    n_train = cfg.n_train_timesteps
    train_ts = np.arange(n_train)
    test_ts = np.arange(n_train, n_train + cfg.n_test_timesteps)
    val_ts = np.unique(np.linspace(0, n_train - 1, cfg.n_val_timesteps).round().astype(int))
    splits = {
        "train": [(t, c) for t in train_ts for c in (0, 1)],
        "val": [(t, 2) for t in val_ts],
        "test": [(t, c) for t in test_ts for c in (0, 1)],
    }
    for t in range(n_train + cfg.n_test_timesteps):
        tracked = int(seq["tracked_as"][t])  # t itself, or a far timestep where the tracker failed
        _write_npz(out / "flame_param" / f"{t:05d}.npz", {
            "expr": seq["expr"][tracked][None].astype(np.float32),
            "jaw_pose": seq["jaw_pose"][tracked][None].astype(np.float32),
            "eyes_pose": seq["eyes_pose"][tracked][None].astype(np.float32),
            "neck_pose": seq["neck_pose"][tracked][None].astype(np.float32),
            "rotation": seq["rotation"][tracked][None].astype(np.float32),
            "translation": seq["translation"][tracked][None].astype(np.float32),
            "shape": np.zeros(300, dtype=np.float32),
        })
    if session:
        good = [t for t in range(n_train + cfg.n_test_timesteps) if seq["tracked_as"][t] == t]
        (out / SESSION_ALLOWLIST).write_text(
            "# timesteps whose FLAME tracking is right (the mis-tracked ones are left out)\n"
            + "".join(f"{t}\n" for t in good))
    _write_npz(out / "canonical_flame_param.npz", {
        "expr": np.zeros((1, N_EXPR), np.float32), "jaw_pose": np.zeros((1, 3), np.float32),
        "eyes_pose": np.zeros((1, 6), np.float32), "neck_pose": np.zeros((1, 3), np.float32),
        "rotation": np.zeros((1, 3), np.float32), "translation": np.zeros((1, 3), np.float32),
        "shape": np.zeros(300, np.float32),
    })
    if not vhap:  # VHAP's exporter writes no point cloud
        write_ply_points(out / "points3d.ply", _surface_points(10000, cfg.seed))

    all_frames = [fc for s in splits.values() for fc in s]
    angle = 2 * math.atan(size / (2 * focal))
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not (progress and console.is_terminal)) as bar:
        task = bar.add_task("generating synthetic head", total=len(all_frames))
        for start in range(0, len(all_frames), CHUNK_FRAMES):
            chunk = all_frames[start:start + CHUNK_FRAMES]
            ts = np.array([t for t, _ in chunk])
            rgba, wrinkles = render_frames(head, seq, ts, np.array([c for _, c in chunk]), rays, size, ss, look)
            for (t, c), img, region in zip(chunk, rgba, wrinkles):
                if vhap:  # RGB over white beside the matte, as VHAP's exporter writes them
                    alpha = img[..., 3:].astype(np.float64) / 255.0
                    over_white = img[..., :3].astype(np.float64) * alpha + 255.0 * (1.0 - alpha)
                    Image.fromarray(np.round(over_white).astype(np.uint8), "RGB").save(
                        out / "images" / f"{t:05d}_{c:02d}.png")
                    Image.fromarray(img[..., 3], "L").save(out / "fg_masks" / f"{t:05d}_{c:02d}.png")
                else:
                    Image.fromarray(img, "RGBA").save(out / "images" / f"{t:05d}_{c:02d}.png")
                Image.fromarray(region, "L").save(out / "regions" / f"{t:05d}_{c:02d}_wrinkles.png")
            bar.advance(task, len(chunk))

    # VHAP stores cy from the bottom (its opencv->opengl conversion flips it); the reader's "vhap" default undoes
    # that. The GaussianAvatars flavour's centred principal point reads the same either way.
    stored_cy = size - cy if vhap else cy
    for split, frames in splits.items():
        doc = {
            "cx": cx, "cy": stored_cy, "fl_x": focal, "fl_y": focal, "w": size, "h": size,
            "camera_angle_x": angle, "camera_angle_y": angle,
            "timestep_indices": sorted({int(t) for t, _ in frames}),
            "camera_indices": sorted({int(c) for _, c in frames}),
            "frames": [{
                "timestep_index": int(t), "camera_index": int(c), "camera_id": f"synth{c}",
                "cx": cx, "cy": stored_cy, "fl_x": focal, "fl_y": focal, "w": size, "h": size,
                "camera_angle_x": angle, "camera_angle_y": angle,
                "transform_matrix": c2ws[c].tolist(),
                "file_path": f"images/{t:05d}_{c:02d}.png",
                **({"fg_mask_path": f"fg_masks/{t:05d}_{c:02d}.png"} if vhap else {}),
                "flame_param_path": f"flame_param/{t:05d}.npz",
                "region_mask_paths": {"wrinkles": f"regions/{t:05d}_{c:02d}_wrinkles.png"},
                "rare_expression": bool(seq["rare"][t]),
                **({"tracking_glitch": True} if seq["tracked_as"][t] != t else {}),
            } for t, c in frames],
        }
        (out / f"transforms_{split}.json").write_text(json.dumps(doc, indent=2))
    return out


def mirror_key(cfg: Any, session: int, display_camera: int, eye_head: tuple[float, float, float]) -> str:
    """Cache key of one session's mirror views: the session's data and the mirror's geometry."""
    blob = json.dumps({"session": config_key(cfg, session), "display_camera": display_camera,
                       "eye_head": [round(float(v), 6) for v in eye_head]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def generate_mirror_views(cfg: Any, out_dir: str | os.PathLike, session: int = 0, display_camera: int = 2,
                          eye_head: tuple[float, float, float] = (0.0, 0.022, 0.072)) -> Path:
    """The ground truth of the virtual mirror viewpoint (``reflect.data.mirror``) for the val timesteps, written
    as a dataset folder with a ``transforms_mirror.json`` split in the session's own conventions (flavour).

    Args:
        cfg: the synthetic head's parameters.
        out_dir: the folder to write.
        session: which capture session (0-based).
        display_camera: the camera index of the display's camera (0, 1: the stereo pair; 2: the frontal one).
        eye_head: the viewer's eye point in head-local metres (default: between the synthetic eyes).
    Returns:
        out_dir. The renders are of the proper mirror camera (the display shows them flipped left to right).
    """
    from reflect.data.mirror import MIRROR_CAMERA_INDEX, head_point_world, mirror_camera

    cfg = _as_config(cfg)
    cfg.validate()
    if display_camera not in (0, 1, 2):
        raise ValueError(f"display_camera: the synthetic head has cameras 0, 1 and 2, got {display_camera}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "flame_param").mkdir(exist_ok=True)
    look = SESSION_LOOKS[session]
    vhap = cfg.flavour == "vhap"
    seq = make_sequence(cfg, session)
    if vhap:
        seq = split_neck_motion(seq)
        (out / "fg_masks").mkdir(exist_ok=True)
    size, ss = cfg.image_size, cfg.supersample
    c2ws, focal = make_cameras(cfg)
    cx, cy = (VHAP_PRINCIPAL_POINT[0] * size, VHAP_PRINCIPAL_POINT[1] * size) if vhap else (size / 2.0, size / 2.0)
    display_c2w_cv = c2ws[display_camera] @ np.diag([1.0, -1.0, -1.0, 1.0])
    display_w2c = np.linalg.inv(display_c2w_cv)
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    timesteps = np.unique(np.linspace(0, cfg.n_train_timesteps - 1, cfg.n_val_timesteps).round().astype(int))
    head = ProceduralHead(cfg.seed)
    frames = []
    for t in timesteps:
        tracked = int(seq["tracked_as"][t])
        eye = head_point_world(eye_head, seq["rotation"][t], seq["neck_pose"][t], seq["translation"][t])
        viewmat, mirror_K = mirror_camera(display_w2c, K, eye)
        c2w_gl = np.linalg.inv(viewmat) @ np.diag([1.0, -1.0, -1.0, 1.0])
        rays = [camera_rays(c2w_gl, mirror_K[0, 0], size, ss, (cx, cy))]
        rgba, _ = render_frames(head, seq, np.array([t]), np.array([0]), rays, size, ss, look)
        name = f"{t:05d}_{MIRROR_CAMERA_INDEX:02d}.png"
        if vhap:
            alpha = rgba[0, ..., 3:].astype(np.float64) / 255.0
            over_white = rgba[0, ..., :3].astype(np.float64) * alpha + 255.0 * (1.0 - alpha)
            Image.fromarray(np.round(over_white).astype(np.uint8), "RGB").save(out / "images" / name)
            Image.fromarray(rgba[0, ..., 3], "L").save(out / "fg_masks" / name)
        else:
            Image.fromarray(rgba[0], "RGBA").save(out / "images" / name)
        _write_npz(out / "flame_param" / f"{t:05d}.npz", {
            key: seq[key][tracked][None].astype(np.float32)
            for key in ("expr", "jaw_pose", "eyes_pose", "neck_pose", "rotation", "translation")
        } | {"shape": np.zeros(300, dtype=np.float32)})
        frames.append({
            "timestep_index": int(t), "camera_index": MIRROR_CAMERA_INDEX, "camera_id": f"mirror{display_camera}",
            "cx": cx, "cy": size - cy if vhap else cy, "fl_x": float(mirror_K[0, 0]), "fl_y": float(mirror_K[1, 1]),
            "w": size, "h": size, "transform_matrix": c2w_gl.tolist(), "file_path": f"images/{name}",
            "flame_param_path": f"flame_param/{t:05d}.npz",
            **({"fg_mask_path": f"fg_masks/{name}"} if vhap else {}),
        })
    _write_npz(out / "canonical_flame_param.npz", {
        "expr": np.zeros((1, N_EXPR), np.float32), "jaw_pose": np.zeros((1, 3), np.float32),
        "eyes_pose": np.zeros((1, 6), np.float32), "neck_pose": np.zeros((1, 3), np.float32),
        "rotation": np.zeros((1, 3), np.float32), "translation": np.zeros((1, 3), np.float32),
        "shape": np.zeros(300, np.float32),
    })
    (out / "transforms_mirror.json").write_text(json.dumps({
        "mirror": {"display_camera": display_camera, "eye_head": list(eye_head)}, "frames": frames}, indent=2))
    return out


def ensure_mirror_views(cfg: Any, session: int = 0, display_camera: int = 2,
                        eye_head: tuple[float, float, float] = (0.0, 0.022, 0.072)) -> Path:
    """The cached mirror-view ground truth of one session (generated on first use, atomically like the head)."""
    root = cache_dir()
    target = root / f"synthetic_mirror-{mirror_key(cfg, session, display_camera, eye_head)}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        generate_mirror_views(cfg, tmp, session, display_camera, eye_head)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def cache_dir() -> Path:
    """$REFLECT_CACHE_DIR, else $XDG_CACHE_HOME/reflect, else ~/.cache/reflect."""
    if os.environ.get("REFLECT_CACHE_DIR"):
        return Path(os.environ["REFLECT_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "reflect"


def ensure_synthetic_head(cfg: Any, session: int = 0) -> Path:
    """The cached synthetic head (one session of it) for cfg, generated on first use.

    Generation writes into a temporary sibling folder renamed into place at the end, so an interrupted run
    never leaves half a dataset, and a process that loses the race to another simply uses the winner's copy.
    """
    root = cache_dir()
    target = root / f"synthetic_head-{config_key(cfg, session)}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        generate_synthetic_head(cfg, tmp, session=session)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_preview(dataset_root: Path, out_png: Path, scale: int = 4) -> Path:
    """A contact sheet (read back through the real reader): neutral, brow, smile, squint, rare, val, test frames."""
    from reflect.data.config import DataConfig, SessionConfig
    from reflect.data.layout import load_splits

    splits = load_splits(DataConfig(sessions=[SessionConfig(root=str(dataset_root), name="synthetic")]))
    train = splits["train"]
    codes = train.expression_codes()
    cam0 = train.camera_indices() == 0
    score = {
        "neutral": -np.abs(codes[:, :3]).sum(1) - 10 * codes[:, 100],
        "brow": codes[:, 1] - 5 * (codes[:, 1] > 1.5) - codes[:, 0],
        "smile": codes[:, 0] - 5 * (codes[:, 0] > 1.5) - codes[:, 1],
        "squint": codes[:, 2] - codes[:, 1],
        "rare": codes[:, 100],
    }
    items = [train[int(np.argmax(np.where(cam0, s, -np.inf)))] for s in score.values()]
    items += [splits["val"][0], splits["val"][len(splits["val"]) // 2], splits["test"][1]]
    tiles = [(it["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for it in items]
    sheet = np.concatenate(tiles, axis=1)
    img = Image.fromarray(sheet, "RGB").resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_png)
    return out_png


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reflect.data.synthetic",
                                 description="Generate (or find in the cache) the synthetic head dataset.")
    ap.add_argument("--preview", type=Path, help="write a contact sheet of a few frames to this PNG")
    ap.add_argument("--out", type=Path, help="write the dataset here instead of the cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args(argv)
    cfg = SyntheticHeadConfig(seed=args.seed, image_size=args.image_size)
    start = time.perf_counter()
    root = generate_synthetic_head(cfg, args.out) if args.out else ensure_synthetic_head(cfg)
    print(f"synthetic head: {root} ({time.perf_counter() - start:.1f} s)")
    if args.preview:
        print(f"preview: {write_preview(root, args.preview)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
