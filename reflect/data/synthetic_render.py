"""The synthetic head's renderer: an analytic ray tracer of a procedural, FLAME-posed head (torch, vectorised).

A head of ellipsoids (cranium, mid-face, upper lip, jaw rotating with ``jaw_pose[0]``, nose, ears, eyeballs,
neck, a dark mouth cavity with upper teeth) under the rigid pose ``world = R(rotation) R(neck_pose) x + t``,
with a procedural texture in head-local coordinates and expression-driven wrinkles (see
``reflect.data.synthetic`` for what each FLAME parameter does). ``SessionLook`` is how one capture session
differs: its lighting, and how far head and face move. The generator (``reflect.data.synthetic``) and the
mirror-view ground truth (``reflect.data.synthetic_mirror``) both render through ``render_frames``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
import torch

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
