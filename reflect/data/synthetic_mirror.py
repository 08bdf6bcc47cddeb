"""Ground truth of the virtual mirror viewpoint (``reflect.data.mirror``) on the synthetic head.

The synthetic head is the one place a camera can sit at the mirror viewpoint: its renderer draws each val
timestep from the mirror camera of the display's camera, written as a dataset folder with a
``transforms_mirror.json`` split in the session's own conventions, and cached by the geometry.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from reflect.data.synthetic import (_as_config, cached_dataset, config_key, make_cameras, principal_point,
                                    save_frame_image, session_sequence, val_timesteps, write_canonical_param,
                                    write_flame_param)
from reflect.data.config import SYNTHETIC_CAMERAS
from reflect.data.errors import DatasetError
from reflect.data.layout import GL_TO_CV
from reflect.data.synthetic_render import SESSION_LOOKS, ProceduralHead, camera_rays, render_frames

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
    if display_camera not in SYNTHETIC_CAMERAS:
        raise DatasetError(f"eval.mirror_display_camera={display_camera}, but the synthetic head has cameras "
                           f"{', '.join(map(str, SYNTHETIC_CAMERAS))} (0, 1: the stereo pair; 2: the frontal one)")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "flame_param").mkdir(exist_ok=True)
    look = SESSION_LOOKS[session]
    vhap = cfg.flavour == "vhap"
    if vhap:
        (out / "fg_masks").mkdir(exist_ok=True)
    seq = session_sequence(cfg, session)
    size, ss = cfg.image_size, cfg.supersample
    c2ws, focal = make_cameras(cfg)
    cx, cy = principal_point(cfg)
    display_w2c = np.linalg.inv(c2ws[display_camera] @ GL_TO_CV)
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    head = ProceduralHead(cfg.seed)
    frames = []
    for t in val_timesteps(cfg):
        eye = head_point_world(eye_head, seq["rotation"][t], seq["neck_pose"][t], seq["translation"][t])
        viewmat, mirror_K = mirror_camera(display_w2c, K, eye)
        c2w_gl = np.linalg.inv(viewmat) @ GL_TO_CV  # the flip is its own inverse: OpenCV <-> OpenGL axes
        rays = [camera_rays(c2w_gl, mirror_K[0, 0], size, ss, (cx, cy))]
        rgba, _ = render_frames(head, seq, np.array([t]), np.array([0]), rays, size, ss, look)
        name = f"{t:05d}_{MIRROR_CAMERA_INDEX:02d}.png"
        save_frame_image(out, name, rgba[0], vhap)
        write_flame_param(out / "flame_param" / f"{t:05d}.npz", seq, int(t))
        frames.append({
            "timestep_index": int(t), "camera_index": MIRROR_CAMERA_INDEX, "camera_id": f"mirror{display_camera}",
            "cx": cx, "cy": size - cy if vhap else cy, "fl_x": float(mirror_K[0, 0]), "fl_y": float(mirror_K[1, 1]),
            "w": size, "h": size, "transform_matrix": c2w_gl.tolist(), "file_path": f"images/{name}",
            "flame_param_path": f"flame_param/{t:05d}.npz",
            **({"fg_mask_path": f"fg_masks/{name}"} if vhap else {}),
        })
    write_canonical_param(out)
    (out / "transforms_mirror.json").write_text(json.dumps({
        "mirror": {"display_camera": display_camera, "eye_head": list(eye_head)}, "frames": frames}, indent=2))
    return out


def ensure_mirror_views(cfg: Any, session: int = 0, display_camera: int = 2,
                        eye_head: tuple[float, float, float] = (0.0, 0.022, 0.072)) -> Path:
    """The cached mirror-view ground truth of one session (generated on first use, atomically like the head)."""
    return cached_dataset(f"synthetic_mirror-{mirror_key(cfg, session, display_camera, eye_head)}",
                          lambda tmp: generate_mirror_views(cfg, tmp, session, display_camera, eye_head))
