"""Reader for the GaussianAvatars / VHAP "NeRF-style" export, one or several sessions at once.

Metadata (transforms JSON, FLAME npz files, image/mask existence and sizes) is validated eagerly when a
split is loaded, so a bad dataset fails before training starts with a message naming the file; images
are decoded at load (``preload``) or on access, and a decode failure is a DatasetError naming the file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from reflect.data.errors import DatasetError
from reflect.data.images import image_size, read_mask, read_rgba
from reflect.data.ply import read_ply_points

SPLITS = ("train", "val", "test")
# Sizes of the per-frame FLAME parameters; None: any length (VHAP exports 100 expression components by default,
# other trackers fewer or more; the model reads ``expr_dims`` of them, checked by ``expression_length``).
FLAME_KEYS = {"expr": None, "jaw_pose": 3, "eyes_pose": 6, "neck_pose": 3, "rotation": 3, "translation": 3}
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes (y up, looking down -z) → OpenCV


@dataclass(frozen=True)
class Session:
    """A resolved session: its root, unique name and allowed timesteps (None = all)."""

    root: Path
    name: str
    allowlist: Optional[frozenset[int]]


@dataclass
class _Frame:
    session: int
    timestep: int
    camera: int
    image: Path
    mask: Optional[Path]
    viewmat: np.ndarray
    K: np.ndarray
    flame: dict[str, np.ndarray]
    frame_id: str
    regions: dict[str, Path]


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found (expected a GaussianAvatars/VHAP transforms file)") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def allowed_bases(root: Path) -> list[str]:
    """Folders a frame's files may live in: the root, plus the sequences a VHAP union dataset lists.

    VHAP's ``combine_nerf_datasets`` (GaussianAvatars' UNION datasets) writes paths
    ``../<sequence>/images/...`` and names those sequences in ``sequences_*.txt``.
    """
    bases = [os.path.normpath(root)]
    for listing in sorted(root.glob("sequences_*.txt")):
        for line in listing.read_text(errors="replace").splitlines():
            name = line.strip()
            if name and name not in (".", "..") and "/" not in name and "\\" not in name:
                bases.append(os.path.normpath(root.parent / name))
    return bases


def _inside(root: Path, rel: Any, where: str, bases: list[str]) -> Path:
    """root/rel, refusing absolute paths and '..' that leave the dataset root (or a listed sibling sequence)."""
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{where}: expected a relative path string, got {rel!r}")
    joined = os.path.normpath(os.path.join(root, rel))
    if os.path.isabs(rel) or not any(os.path.commonpath([base, joined]) == base for base in bases):
        raise DatasetError(f"{where}: path {rel!r} leaves the dataset root {root}")
    return Path(joined)


def _optional_array(path: Path, key: str) -> Optional[np.ndarray]:
    """``key`` of an npz as float32, or None where the file lacks it (its readability is checked elsewhere)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz[key], dtype=np.float32) if key in npz.files else None
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read as .npz ({exc})") from None


def _load_flame(path: Path, where: str, keys: dict[str, Optional[int]]) -> dict[str, np.ndarray]:
    """The FLAME parameters of one npz, flattened to float32 and size-checked."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files if k in keys}
    except FileNotFoundError:
        raise DatasetError(f"{path}: FLAME parameter file not found ({where})") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read as .npz ({where}): {exc}") from None
    out = {}
    for key, size in keys.items():
        if key not in data:
            raise DatasetError(f"{path}: missing key '{key}' (expected {', '.join(keys)}; {where})")
        arr = np.asarray(data[key], dtype=np.float32).reshape(-1)
        if size is None and arr.size == 0:
            raise DatasetError(f"{path}: '{key}' is empty ({where})")
        if size is not None and arr.size != size:
            raise DatasetError(f"{path}: '{key}' has {arr.size} values, expected {size} ({where})")
        out[key] = arr
    return out


def _matrix(value: Any, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: transform_matrix must be a 4x4 array of numbers") from None
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise DatasetError(f"{where}: transform_matrix must be a finite 4x4 array, got shape {m.shape}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-8:
        raise DatasetError(f"{where}: transform_matrix is singular")
    return m


def _intrinsics(top: dict, frame: dict, where: str) -> tuple[np.ndarray, int, int]:
    """K and (w, h): per-frame values override the top-level ones; fl from camera_angle_* if absent."""
    def get(key: str) -> Any:
        return frame.get(key, top.get(key))

    try:
        w, h = int(get("w")), int(get("h"))
        fx = get("fl_x")
        fx = float(fx) if fx is not None else 0.5 * w / np.tan(0.5 * float(get("camera_angle_x")))
        fy = get("fl_y")
        fy = float(fy) if fy is not None else (
            0.5 * h / np.tan(0.5 * float(get("camera_angle_y"))) if get("camera_angle_y") is not None else fx)
        cx = float(get("cx")) if get("cx") is not None else w / 2.0
        cy = float(get("cy")) if get("cy") is not None else h / 2.0
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: expected numeric intrinsics w, h and fl_x (or camera_angle_x), "
                           "per frame or at the top level") from None
    if w < 1 or h < 1 or fx <= 0 or fy <= 0:
        raise DatasetError(f"{where}: expected positive w, h, fl_x, fl_y, got {w}, {h}, {fx}, {fy}")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32), w, h


def read_allowlist(path: Path) -> frozenset[int]:
    """Timesteps from a JSON list or a text file with one integer per line ('#' comments allowed)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the timestep allowlist ({exc.strerror})") from None
    try:
        if text.lstrip().startswith("["):
            values = json.loads(text)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError("not a list of integers")
            return frozenset(values)
        return frozenset(int(line.split("#")[0]) for line in text.splitlines() if line.split("#")[0].strip())
    except ValueError:
        raise DatasetError(f"{path}: expected a JSON list of integers or one integer timestep per line") from None


def resolve_sessions(cfg: Any) -> list[Session]:
    """The configured roots (``sessions``, else ``root``) as absolute paths with unique names."""
    specs = [(s.root, s.name, s.allowlist) for s in cfg.sessions] if cfg.sessions else [(cfg.root, None, None)]
    sessions, names = [], set()
    for i, (root, name, allow) in enumerate(specs):
        path = Path(os.path.expanduser(str(root))).absolute()
        if not path.is_dir():
            raise DatasetError(f"{path}: dataset root not found (session {i}; expected a directory with "
                               "transforms_train.json, transforms_val.json, transforms_test.json)")
        name = name or path.name or f"s{i}"
        if name in names:
            name = f"{name}-{i}"
        names.add(name)
        allowed = read_allowlist(Path(os.path.expanduser(allow)).absolute()) if allow else None
        sessions.append(Session(path, name, allowed))
    return sessions


class AvatarDataset(Dataset):
    """The frames of one split over all sessions; items are dicts of tensors (see ``__getitem__``)."""

    def __init__(self, sessions: list[Session], split: str, background: tuple[float, float, float],
                 preload: bool = True, max_frames: Optional[int] = None, downscale: int = 1,
                 principal_point: str = "vhap", dynamic_offsets: bool = False,
                 first_timesteps: Optional[int] = None) -> None:
        self.split = split
        self.dynamic_offsets = dynamic_offsets
        self.downscale = int(downscale)
        self.principal_point = principal_point
        self.sessions = sessions
        self.session_names = [s.name for s in sessions]
        self.background = torch.tensor(background, dtype=torch.float32)[:, None, None]
        frames: list[_Frame] = []
        size: Optional[tuple[int, int, str]] = None
        flame_cache: dict[Path, dict[str, np.ndarray]] = {}
        for si, session in enumerate(sessions):
            path = session.root / f"transforms_{split}.json"
            read = self._read_split(si, session, path, flame_cache)
            if first_timesteps is not None:  # a short session: the first N timesteps this session has
                kept = set(sorted({frame.timestep for frame, _, _ in read})[:first_timesteps])
                read = [(frame, w, h) for frame, w, h in read if frame.timestep in kept]
            for frame, w, h in read:
                if size is None:
                    size = (w, h, f"{path} frame {frame.frame_id}")
                elif (w, h) != size[:2]:
                    raise DatasetError(f"{path}: frame {frame.frame_id} is {w}x{h} but {size[2]} is "
                                       f"{size[0]}x{size[1]}; all frames of a split must share one size")
                frames.append(frame)
        if not frames:
            hint = ("; a capture with no held-out camera (monocular) can be evaluated on held-out timesteps "
                    "alone with eval.splits=[test]") if split == "val" else ""
            raise DatasetError(f"split '{split}' has no frames in {', '.join(str(s.root) for s in sessions)}"
                               f" (after allowlists){hint}")
        with_offsets = [f for f in frames if "dynamic_offset" in f.flame]
        if with_offsets and len(with_offsets) != len(frames):
            lacking = next(f for f in frames if "dynamic_offset" not in f.flame)
            raise DatasetError(f"split '{split}': frame {with_offsets[0].frame_id} has a dynamic_offset but frame "
                               f"{lacking.frame_id} has none; every frame of a split needs one, or none")
        lengths = {}
        for f in frames:
            lengths.setdefault(f.flame["expr"].size, f.frame_id)
        if len(lengths) > 1:
            (n1, f1), (n2, f2) = list(lengths.items())[:2]
            raise DatasetError(f"split '{split}': frame {f1} has {n1} expression components but frame {f2} has "
                               f"{n2}; every frame must come from one tracker setting")
        ids = [f.frame_id for f in frames]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DatasetError(f"split '{split}': frame {dup} (session/timestep/camera) appears more than once")
        if max_frames is not None and len(frames) > max_frames:
            keep = np.unique(np.linspace(0, len(frames) - 1, max_frames).round().astype(int))
            frames = [frames[i] for i in keep]
        self.frames = frames
        self.width, self.height = size[0], size[1]
        # Region masks serve evaluation only, so the training split neither decodes nor collates them. Every
        # item of an evaluation split carries every region any of its frames has (all-zero where a frame lacks
        # one) so that batches collate; an empty mask means "no value" to the region metrics.
        self.region_names = [] if split == "train" else sorted({name for f in frames for name in f.regions})
        canonical = sessions[0].root / "canonical_flame_param.npz"
        self.canonical_shape = _load_flame(canonical, "canonical parameters", {"shape": 300})["shape"]
        # VHAP's per-vertex offsets of the tracked subject (FLAME layer only); None where the export has none
        self.canonical_static_offset = _optional_array(canonical, "static_offset")
        self._cache: Optional[list[tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor],
                                         dict[str, torch.Tensor]]]] = None
        if preload:
            self._cache = [self._decode(f) for f in frames]

    def _read_split(self, si: int, session: Session, path: Path,
                    flame_cache: dict[Path, dict[str, np.ndarray]]) -> list[tuple[_Frame, int, int]]:
        doc = _read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
            raise DatasetError(f"{path}: expected an object with a 'frames' list")
        bases = allowed_bases(session.root)
        out = []
        for i, fr in enumerate(doc["frames"]):
            where = f"{path} frame {i}"
            if not isinstance(fr, dict):
                raise DatasetError(f"{where}: expected an object, got {type(fr).__name__}")
            where = f"{path} frame {i} ({fr.get('file_path', '?')})"
            try:
                timestep, camera = int(fr["timestep_index"]), int(fr["camera_index"])
            except KeyError as exc:
                raise DatasetError(f"{where}: missing '{exc.args[0]}'") from None
            except (TypeError, ValueError):
                raise DatasetError(f"{where}: timestep_index and camera_index must be integers") from None
            if session.allowlist is not None and timestep not in session.allowlist:
                continue
            for key in ("file_path", "flame_param_path", "transform_matrix"):
                if key not in fr:
                    raise DatasetError(f"{where}: missing '{key}'")
            c2w = _matrix(fr["transform_matrix"], where)
            w2c = np.linalg.inv(c2w @ GL_TO_CV).astype(np.float32)
            K, w, h = _intrinsics(doc, fr, where)
            if self.principal_point == "vhap":  # stored from the bottom (VHAP's opencv->opengl flip): undo it
                K[1, 2] = h - K[1, 2]
            stored_size = (w, h)
            if self.downscale > 1:
                w, h = w // self.downscale, h // self.downscale
                if w < 1 or h < 1:
                    raise DatasetError(f"{where}: {stored_size[0]}x{stored_size[1]} is smaller than "
                                       f"data.downscale={self.downscale}")
                K = K.copy()
                K[:2] /= self.downscale  # box pixels: continuous image coordinates scale by 1/downscale
            file_path = fr["file_path"]
            if isinstance(file_path, str) and file_path and not Path(file_path).suffix:
                file_path += ".png"  # as GaussianAvatars does for exports that omit the extension
            image = _inside(session.root, file_path, where, bases)
            mask = _inside(session.root, fr["fg_mask_path"], where, bases) if fr.get("fg_mask_path") else None
            regions = self._region_paths(session.root, fr.get("region_mask_paths"), where, bases)
            for p in (image, mask, *regions.values()):
                if p is not None:
                    iw, ih = image_size(p)
                    if (iw, ih) != stored_size:
                        raise DatasetError(f"{p}: image is {iw}x{ih}, expected {stored_size[0]}x{stored_size[1]} "
                                           f"from {where}")
            fp = _inside(session.root, fr["flame_param_path"], where, bases)
            if fp not in flame_cache:
                flame_cache[fp] = _load_flame(fp, where, FLAME_KEYS)
                if self.dynamic_offsets:  # VHAP's per-timestep vertex offsets [1,V,3], for the FLAME layer only
                    offsets = _optional_array(fp, "dynamic_offset")
                    if offsets is not None:
                        flame_cache[fp]["dynamic_offset"] = offsets.reshape(-1, 3)
            frame_id = f"{session.name}/t{timestep:05d}/c{camera}"
            out.append((_Frame(si, timestep, camera, image, mask, w2c, K, flame_cache[fp], frame_id, regions), w, h))
        return out

    @staticmethod
    def _region_paths(root: Path, spec: Any, where: str, bases: list[Path]) -> dict[str, Path]:
        """Reflect's optional ``region_mask_paths`` frame key: {region name: mask image} for region metrics.

        Not part of the GaussianAvatars export (real captures have none unless someone adds them); the
        synthetic head writes a ``wrinkles`` mask so expression-detail quality can be scored on its own.
        """
        if spec is None:
            return {}
        if not isinstance(spec, dict) or not all(isinstance(k, str) and k.isidentifier() and isinstance(v, str)
                                                 for k, v in spec.items()):
            raise DatasetError(f"{where}: 'region_mask_paths' must map region names (identifiers) to mask paths")
        if "masked" in spec:  # its metric would be psnr_masked, the foreground-masked PSNR
            raise DatasetError(f"{where}: region name 'masked' is reserved (psnr_masked is the foreground PSNR)")
        return {name: _inside(root, rel, where, bases) for name, rel in sorted(spec.items())}

    def _decode(self, f: _Frame) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor],
                                          dict[str, torch.Tensor]]:
        """One frame, reduced by ``downscale``: uint8 RGB [3,H,W]; the uint8 alpha [1,H,W] the metrics and masked
        losses use (the fg mask if given, else the image's alpha; None: everywhere 1); the uint8 alpha [1,H,W]
        the image is composited over the background with (its own alpha; None: the stored RGB is the ground
        truth as it is, e.g. VHAP's frames composited over white beside a soft fg_mask); region masks bool [1,H,W].
        Alphas stay uint8: a quarter of float32's memory per preloaded frame.
        """
        d = self.downscale
        rgb, image_alpha = read_rgba(f.image)
        if (rgb.shape[0] // d, rgb.shape[1] // d) != (self.height, self.width):
            raise DatasetError(f"{f.image}: decoded {rgb.shape[1]}x{rgb.shape[0]}, expected "
                               f"{self.width * d}x{self.height * d}")
        mask = read_mask(f.mask) if f.mask is not None else None
        if image_alpha is not None and d > 1:
            # Average premultiplied colour, then divide by the averaged alpha: compositing the reduced frame over
            # the background then equals reducing the composited frame (plain averages would bleed the colour of
            # transparent pixels into the edges).
            weight = image_alpha.astype(np.float32)[..., None] / 255.0
            premultiplied = _box_mean(rgb.astype(np.float32) * weight, d)
            coverage = _box_mean(weight, d)
            rgb = np.clip(np.rint(np.where(coverage > 0, premultiplied / np.maximum(coverage, 1e-8), 0.0)), 0, 255)
            rgb = rgb.astype(np.uint8)
        else:
            rgb = _box_reduce(rgb, d)
        over = None if image_alpha is None else torch.from_numpy(_box_reduce(image_alpha, d))[None]
        metric_alpha = over if mask is None else torch.from_numpy(_box_reduce(mask, d))[None]
        regions = {}
        for name, path in f.regions.items():
            if name not in self.region_names:  # the training split keeps none
                continue
            m = read_mask(path)
            if (m.shape[0] // d, m.shape[1] // d) != (self.height, self.width):
                raise DatasetError(f"{path}: decoded {m.shape[1]}x{m.shape[0]}, expected "
                                   f"{self.width * d}x{self.height * d}")
            regions[name] = torch.from_numpy(_box_reduce(m, d) >= 128)[None]
        return torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), metric_alpha, over, regions

    def ground_truth_rule(self) -> str:
        """How the first frame's ground truth is formed (recorded in the evaluation protocol)."""
        _, image_alpha = read_rgba(self.frames[0].image)
        if image_alpha is not None:
            return "RGBA composited over the background"
        return "stored RGB as is" + (" (fg_mask: masks only)" if self.frames[0].mask is not None else "")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self.frames[i]
        rgb_u8, alpha_u8, over_u8, regions = self._cache[i] if self._cache is not None else self._decode(f)
        alpha = torch.ones(1, self.height, self.width) if alpha_u8 is None else alpha_u8.float() / 255.0
        image = rgb_u8.float() / 255.0
        if over_u8 is not None:  # RGBA: over the background; a stored RGB (with or without a mask) is used as is
            over = over_u8.float() / 255.0
            image = image * over + self.background * (1 - over)
        viewmat = torch.from_numpy(f.viewmat)
        item: dict[str, Any] = {
            "image": image, "alpha": alpha, "viewmat": viewmat, "K": torch.from_numpy(f.K),
            "cam_center": -viewmat[:3, :3].T @ viewmat[:3, 3],
            "regions": {name: regions[name].float() if name in regions else torch.zeros(1, self.height, self.width)
                        for name in self.region_names},
        }
        item.update({k: torch.from_numpy(v) for k, v in f.flame.items()})
        item.update(session=torch.tensor(f.session), timestep=torch.tensor(f.timestep),
                    camera=torch.tensor(f.camera), index=torch.tensor(i), frame_id=f.frame_id)
        return item

    def expression_length(self) -> int:
        """How many FLAME expression components every frame of this split has."""
        return int(self.frames[0].flame["expr"].size)

    def expression_codes(self) -> np.ndarray:
        """[len, E+9] expr (E = expression_length) | jaw_pose | eyes_pose per frame, without decoding images."""
        return np.stack([np.concatenate([f.flame["expr"], f.flame["jaw_pose"], f.flame["eyes_pose"]])
                         for f in self.frames])

    def session_indices(self) -> np.ndarray:
        return np.array([f.session for f in self.frames], dtype=np.int64)

    def camera_indices(self) -> np.ndarray:
        return np.array([f.camera for f in self.frames], dtype=np.int64)

    def timestep_indices(self) -> np.ndarray:
        return np.array([f.timestep for f in self.frames], dtype=np.int64)

    def init_points(self) -> Optional[np.ndarray]:
        """[P,3] points3d.ply of the first root (canonical head-local points), or None if it has none."""
        path = self.sessions[0].root / "points3d.ply"
        return read_ply_points(path) if path.is_file() else None


MIRROR_SPLIT = "mirror"


def load_splits(cfg: Any, splits: Sequence[str] = SPLITS, dynamic_offsets: bool = False,
                mirror_display_camera: Optional[int] = None,
                mirror_eye_m: Sequence[float] = (0.0, 0.022, 0.072)) -> dict[str, AvatarDataset]:
    """The named splits (default train/val/test) of a DataConfig; the synthetic head is generated (cached) when
    no root is set. Training loads only ``train`` and the evaluated splits, so a monocular capture with no
    held-out camera trains with ``eval.splits=[test]``."""
    unknown = [s for s in splits if s not in (*SPLITS, MIRROR_SPLIT)]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {[*SPLITS, MIRROR_SPLIT]}")
    if cfg.root is None and not cfg.sessions:
        from reflect.data.synthetic import SESSION_ALLOWLIST, ensure_synthetic_head, session_name

        sessions = []
        for index in range(int(getattr(cfg.synthetic, "sessions", 1))):
            root = ensure_synthetic_head(cfg.synthetic, index)
            guarded = index > 0 and bool(getattr(cfg.synthetic, "allowlist", True))
            sessions.append(Session(root, session_name(index), read_allowlist(root / SESSION_ALLOWLIST)
                                    if guarded else None))
    else:
        sessions = resolve_sessions(cfg)
    evaluated = _evaluated_sessions(sessions, getattr(cfg, "eval_sessions", None))
    bg = tuple(float(c) for c in cfg.background)

    def split_sessions(split: str) -> list[Session]:
        if split == "train":
            return sessions
        if split != MIRROR_SPLIT:
            return evaluated
        return _mirror_sessions(cfg, evaluated, mirror_display_camera, tuple(float(v) for v in mirror_eye_m))

    return {split: AvatarDataset(split_sessions(split), split, bg, preload=bool(cfg.preload),
                                 max_frames=None if split == "train" else cfg.max_eval_frames,
                                 downscale=getattr(cfg, "downscale", 1),
                                 principal_point=getattr(cfg, "principal_point", "vhap"),
                                 dynamic_offsets=dynamic_offsets,
                                 first_timesteps=getattr(cfg, "train_timesteps", None) if split == "train" else None)
            for split in dict.fromkeys(splits)}


def _mirror_sessions(cfg: Any, evaluated: list[Session], display_camera: Optional[int],
                     eye: tuple[float, float, float]) -> list[Session]:
    """The mirror split's sessions: the synthetic head renders its ground truth (``generate_mirror_views``);
    a capture has none, so scoring the mirror view there is an error that says so."""
    if cfg.root is not None or cfg.sessions:
        raise DatasetError("eval.splits includes 'mirror', which needs ground truth of the virtual mirror viewpoint: "
                           "only the synthetic head can render it; a capture has no camera there (its mirror view "
                           "can be rendered, not scored)")
    from reflect.data.synthetic import session_name
    from reflect.data.synthetic_mirror import ensure_mirror_views

    by_name = {s.name: s for s in evaluated}  # a later session's allowlist applies to its mirror frames too
    return [Session(ensure_mirror_views(cfg.synthetic, index, 2 if display_camera is None else display_camera, eye),
                    session_name(index), by_name[session_name(index)].allowlist)
            for index in range(int(getattr(cfg.synthetic, "sessions", 1))) if session_name(index) in by_name]


def _evaluated_sessions(sessions: list[Session], names: Optional[Sequence[str]]) -> list[Session]:
    """The sessions whose val/test frames are evaluated: ``data.eval_sessions`` by name, else all."""
    if names is None:
        return sessions
    known = [s.name for s in sessions]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DatasetError(f"data.eval_sessions: no session named {', '.join(map(repr, unknown))}; "
                           f"the sessions are {', '.join(map(repr, known))}")
    return [s for s in sessions if s.name in set(names)]


def _box_reduce(pixels: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [H,W] or [H,W,C] averaged over factor x factor boxes (rounded), after cropping the remainder.

    Hand-written rather than PIL's resize: PIL's box filter maps a size that is not a multiple of the factor
    onto the whole output, which moves pixel centres and breaks the exact K / factor of the intrinsics.
    """
    if factor == 1:
        return pixels
    return np.clip(np.rint(_box_mean(pixels.astype(np.float32), factor)), 0, 255).astype(np.uint8)


def _box_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """float [H,W,...] averaged over factor x factor boxes, the remainder rows/columns cropped."""
    h, w = values.shape[0] // factor, values.shape[1] // factor
    cropped = values[: h * factor, : w * factor]
    return cropped.reshape(h, factor, w, factor, *values.shape[2:]).mean(axis=(1, 3))
