"""Typed data configuration (OmegaConf structured configs): real roots, sessions, or the synthetic head."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


SYNTHETIC_FLAVOURS = ("gaussian_avatars", "vhap")
SYNTHETIC_CAMERAS = (0, 1, 2)  # the synthetic head's cameras (synthetic.make_cameras): the stereo pair, the frontal one


@dataclass
class SyntheticHeadConfig:
    """Knobs of the embedded synthetic head; every field is part of its cache key and fingerprint."""

    seed: int = 0
    image_size: int = 64
    n_train_timesteps: int = 150
    n_test_timesteps: int = 16  # held-out timesteps at the end of the sequence (self-reenactment)
    n_val_timesteps: int = 24  # train timesteps also rendered from the held-out frontal camera (novel view)
    supersample: int = 3  # rays per pixel along each axis (anti-aliasing and alpha coverage)
    rare_fraction: float = 0.07  # train timesteps replaced by extreme expressions
    camera_distance: float = 0.8  # metres from the head centre
    stereo_yaw_deg: float = 12.0  # the two training cameras sit at ±this yaw
    field_of_view_m: float = 0.27  # width of the scene covered by the image at the head's distance
    # Capture sessions generated and loaded. Each later session is a second capture of the same head: another
    # lighting, wider head motion and expression range, and mis-tracked timesteps that its allowlist.txt leaves
    # out. Loader options, not generator parameters: they do not enter a session's cache key.
    sessions: int = 1
    allowlist: bool = True  # load the later sessions through their allowlist (the guard); False: every frame
    # The export's conventions: "gaussian_avatars" (RGBA images, centred principal point, points3d.ply, no neck
    # motion) or "vhap" (VHAP's export_as_nerf_dataset.py: RGB composited over white + fg_masks/ mattes, an
    # off-centre principal point stored as cy = h - cy, head motion split between rotation and neck_pose, and no
    # points3d.ply). Both show the same head, poses and pixels.
    flavour: str = "gaussian_avatars"

    def validate(self) -> None:
        if self.seed < 0:  # numpy's generators take non-negative seeds only
            raise ValueError(f"seed: expected an integer >= 0, got {self.seed}")
        if self.image_size < 8:
            raise ValueError(f"image_size: expected an integer >= 8, got {self.image_size}")
        if self.n_train_timesteps < 2:
            raise ValueError(f"n_train_timesteps: expected an integer >= 2, got {self.n_train_timesteps}")
        if self.n_test_timesteps < 1:
            raise ValueError(f"n_test_timesteps: expected a positive integer, got {self.n_test_timesteps}")
        if not 1 <= self.n_val_timesteps <= self.n_train_timesteps:
            raise ValueError(f"n_val_timesteps: expected 1..n_train_timesteps ({self.n_train_timesteps}), "
                             f"got {self.n_val_timesteps}")
        if not 1 <= self.supersample <= 8:
            raise ValueError(f"supersample: expected an integer in 1..8, got {self.supersample}")
        if not 0.0 <= self.rare_fraction <= 0.5:
            raise ValueError(f"rare_fraction: expected a value in [0, 0.5], got {self.rare_fraction}")
        if self.camera_distance <= 0.3:
            raise ValueError(f"camera_distance: expected metres > 0.3, got {self.camera_distance}")
        if not 0.0 < self.stereo_yaw_deg < 60.0:
            raise ValueError(f"stereo_yaw_deg: expected degrees in (0, 60), got {self.stereo_yaw_deg}")
        if self.field_of_view_m <= 0.1:
            raise ValueError(f"field_of_view_m: expected metres > 0.1, got {self.field_of_view_m}")
        if self.flavour not in SYNTHETIC_FLAVOURS:
            raise ValueError(f"flavour: expected one of {SYNTHETIC_FLAVOURS}, got {self.flavour!r}")
        if isinstance(self.sessions, bool) or not 1 <= self.sessions <= 3:
            raise ValueError(f"sessions: expected 1, 2 or 3 synthetic capture sessions, got {self.sessions!r}")


@dataclass
class SessionConfig:
    """One capture session: its root, a display name (default: the folder name), an optional timestep allowlist."""

    root: str = "???"
    name: Optional[str] = None
    allowlist: Optional[str] = None  # text file (one timestep per line) or JSON list; relative to the CWD

    def validate(self) -> None:
        if not self.root or self.root == "???":
            raise ValueError(f"root: expected a dataset directory, got {self.root!r}")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"name: expected a non-empty name without '/', got {self.name!r}")


PRINCIPAL_POINT_CONVENTIONS = ("vhap", "top")


@dataclass
class DataConfig:
    """Where frames come from: ``sessions`` if non-empty, else ``root``, else the synthetic head."""

    root: Optional[str] = None
    sessions: List[SessionConfig] = field(default_factory=list)
    background: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    preload: bool = True
    max_eval_frames: Optional[int] = None  # a deterministic, evenly spaced subset of val/test
    # integer factor the images are reduced by at load (GaussianAvatars' -r): box-averaged pixels, intrinsics
    # divided by it; a remainder of rows/columns (size not divisible) is cropped from the right and bottom
    downscale: int = 1
    # how an export stores the principal point's y: "vhap" (VHAP's exporter, with its default opencv->opengl
    # conversion, writes cy = h - cy_opencv: measured from the bottom) or "top" (nerfstudio / instant-ngp style)
    principal_point: str = "vhap"
    # names of the sessions whose val/test frames are evaluated (None: every session). A multi-session ablation
    # scores every arm on the same frames: those of the session all arms share.
    eval_sessions: Optional[List[str]] = None
    # train on the first N timesteps of each session only (a short capture: Phase 5's 2-3 minute fitting
    # session); the evaluated frames stay as they are. None: every timestep.
    train_timesteps: Optional[int] = None
    synthetic: SyntheticHeadConfig = field(default_factory=SyntheticHeadConfig)

    def validate(self) -> None:
        if self.principal_point not in PRINCIPAL_POINT_CONVENTIONS:
            raise ValueError(f"principal_point: expected one of {PRINCIPAL_POINT_CONVENTIONS}, "
                             f"got {self.principal_point!r}")
        if isinstance(self.downscale, bool) or not isinstance(self.downscale, int) or self.downscale < 1:
            raise ValueError(f"downscale: expected an integer >= 1 (1 = full resolution), got {self.downscale!r}")
        if len(self.background) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.background):
            raise ValueError(f"background: expected three values in [0, 1], got {list(self.background)}")
        if self.train_timesteps is not None and (isinstance(self.train_timesteps, bool) or self.train_timesteps < 1):
            raise ValueError(f"train_timesteps: expected a positive integer or null, got {self.train_timesteps!r}")
        if self.eval_sessions is not None and (not self.eval_sessions or not all(self.eval_sessions)):
            raise ValueError(f"eval_sessions: expected a non-empty list of session names or null, "
                             f"got {self.eval_sessions!r}")
        if self.max_eval_frames is not None and self.max_eval_frames < 1:
            raise ValueError(f"max_eval_frames: expected a positive integer or null, got {self.max_eval_frames}")
