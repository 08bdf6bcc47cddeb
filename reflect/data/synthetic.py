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
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from reflect.data.config import SyntheticHeadConfig
from reflect.data.ply import write_ply_points
# the renderer lives in synthetic_render; its names are re-exported here, where the generator's users find them
from reflect.data.synthetic_render import (_PRIMS, SESSION_LOOKS, ProceduralHead, SessionLook,  # noqa: F401
                                           axis_angle_to_matrix, camera_rays, render_frames)

GENERATOR_VERSION = "2"  # bump whenever the generator's output changes: it keys the cache and the fingerprint
N_EXPR = 100
CAMERA_TARGET = (0.0, -0.01, 0.0)
CHUNK_FRAMES = 8
REGION_NAMES = ("wrinkles",)  # the region masks every frame carries (``region_mask_paths``)

# --------------------------------------------------------------------------------------------- sequence


def _smooth(rng: np.random.Generator, t: np.ndarray, n_waves: int = 3) -> np.ndarray:
    """A smooth signal in [-1, 1]: a sum of sinusoids with periods of 12-70 timesteps."""
    periods = rng.uniform(12.0, 70.0, n_waves)
    phases = rng.uniform(0.0, 2 * np.pi, n_waves)
    amps = rng.uniform(0.5, 1.0, n_waves)
    s = (amps[:, None] * np.sin(2 * np.pi * t[None] / periods[:, None] + phases[:, None])).sum(0)
    return s / amps.sum()


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


FLAME_FRAME_KEYS = ("expr", "jaw_pose", "eyes_pose", "neck_pose", "rotation", "translation")


def session_sequence(cfg: SyntheticHeadConfig, session: int) -> dict[str, np.ndarray]:
    """The session's FLAME sequence as its export stores it (the VHAP flavour moves part of each pose to the neck)."""
    seq = make_sequence(cfg, session)
    return split_neck_motion(seq) if cfg.flavour == "vhap" else seq


def principal_point(cfg: SyntheticHeadConfig) -> tuple[float, float]:
    """(cx, cy) in pixels from the top-left: off-centre for the VHAP flavour, the image centre otherwise."""
    size = cfg.image_size
    if cfg.flavour == "vhap":
        return VHAP_PRINCIPAL_POINT[0] * size, VHAP_PRINCIPAL_POINT[1] * size
    return size / 2.0, size / 2.0


def val_timesteps(cfg: SyntheticHeadConfig) -> np.ndarray:
    """The train timesteps the held-out frontal camera also sees (the val split's), evenly spaced."""
    return np.unique(np.linspace(0, cfg.n_train_timesteps - 1, cfg.n_val_timesteps).round().astype(int))


def write_flame_param(path: Path, seq: dict[str, np.ndarray], t: int) -> None:
    """The npz of timestep ``t`` as tracked: its own parameters, or a far timestep's where the tracker failed."""
    tracked = int(seq["tracked_as"][t])
    _write_npz(path, {**{key: seq[key][tracked][None].astype(np.float32) for key in FLAME_FRAME_KEYS},
                      "shape": np.zeros(300, dtype=np.float32)})


def write_canonical_param(out: Path) -> None:
    """``canonical_flame_param.npz``: the neutral pose and expression, zero shape."""
    _write_npz(out / "canonical_flame_param.npz", {
        "expr": np.zeros((1, N_EXPR), np.float32), "jaw_pose": np.zeros((1, 3), np.float32),
        "eyes_pose": np.zeros((1, 6), np.float32), "neck_pose": np.zeros((1, 3), np.float32),
        "rotation": np.zeros((1, 3), np.float32), "translation": np.zeros((1, 3), np.float32),
        "shape": np.zeros(300, np.float32),
    })


def save_frame_image(out: Path, name: str, rgba: np.ndarray, vhap: bool) -> None:
    """One rendered frame [H,W,4] uint8: RGBA in ``images/``, or (VHAP) RGB over white beside the matte."""
    if vhap:  # as VHAP's exporter writes them
        alpha = rgba[..., 3:].astype(np.float64) / 255.0
        over_white = rgba[..., :3].astype(np.float64) * alpha + 255.0 * (1.0 - alpha)
        Image.fromarray(np.round(over_white).astype(np.uint8), "RGB").save(out / "images" / name)
        Image.fromarray(rgba[..., 3], "L").save(out / "fg_masks" / name)
    else:
        Image.fromarray(rgba, "RGBA").save(out / "images" / name)


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
    seq = session_sequence(cfg, session)
    vhap = cfg.flavour == "vhap"
    c2ws, focal = make_cameras(cfg)
    head = ProceduralHead(cfg.seed)
    cx, cy = principal_point(cfg)
    rays = [camera_rays(c2w, focal, size, ss, (cx, cy)) for c2w in c2ws]
    if vhap:
        (out / "fg_masks").mkdir(exist_ok=True)

    n_train = cfg.n_train_timesteps
    train_ts = np.arange(n_train)
    test_ts = np.arange(n_train, n_train + cfg.n_test_timesteps)
    val_ts = val_timesteps(cfg)
    splits = {
        "train": [(t, c) for t in train_ts for c in (0, 1)],
        "val": [(t, 2) for t in val_ts],
        "test": [(t, c) for t in test_ts for c in (0, 1)],
    }
    for t in range(n_train + cfg.n_test_timesteps):
        write_flame_param(out / "flame_param" / f"{t:05d}.npz", seq, t)
    if session:
        good = [t for t in range(n_train + cfg.n_test_timesteps) if seq["tracked_as"][t] == t]
        (out / SESSION_ALLOWLIST).write_text(
            "# timesteps whose FLAME tracking is right (the mis-tracked ones are left out)\n"
            + "".join(f"{t}\n" for t in good))
    write_canonical_param(out)
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
                save_frame_image(out, f"{t:05d}_{c:02d}.png", img, vhap)
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


def cache_dir() -> Path:
    """$REFLECT_CACHE_DIR, else $XDG_CACHE_HOME/reflect, else ~/.cache/reflect."""
    if os.environ.get("REFLECT_CACHE_DIR"):
        return Path(os.environ["REFLECT_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "reflect"


def ensure_synthetic_head(cfg: Any, session: int = 0) -> Path:
    """The cached synthetic head (one session of it) for cfg, generated on first use (``cached_dataset``)."""
    return cached_dataset(f"synthetic_head-{config_key(cfg, session)}",
                          lambda tmp: generate_synthetic_head(cfg, tmp, session=session))


def cached_dataset(name: str, generate: Callable[[Path], Any]) -> Path:
    """``<cache_dir>/<name>``, made by ``generate(folder)`` on first use.

    Generation writes into a temporary sibling folder renamed into place at the end, so an interrupted run
    never leaves half a dataset, and a process that loses the race to another simply uses the winner's copy.
    """
    root = cache_dir()
    target = root / name
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        generate(tmp)
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
