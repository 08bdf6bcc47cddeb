"""The training config: one typed tree for everything a trial's result depends on.

``load_train_config("quick")``, ``load_train_config("path/to.yaml", ["trainer.max_steps=20"])``.
A config file may start from a profile with a top-level ``profile: quick|full`` key.
"""
from __future__ import annotations

import hashlib
import math
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from reflect.config_loading import ConfigError, merge_into_schema, read_yaml_mapping, to_plain_dict
from reflect.data.config import SYNTHETIC_CAMERAS, DataConfig
from reflect.lightning.sampling import SamplerConfig
from reflect.losses.config import LossConfig
from reflect.model.config import ModelConfig

PROFILE_DIR = Path(__file__).parent / "profiles"
PROFILES = ("quick", "full")
RENDER_BACKENDS = (None, "numba", "torch", "gsplat")
PARAM_GROUPS = ("means", "scales", "rotations", "opacities", "latents", "deform", "decoder")
GROUP_ALIASES = {"gaussians": ("means", "scales", "rotations", "opacities")}
# what pl.Trainer(accelerator=...) is given; "gpu" and "cuda" are the same (the renderer's GPU path is CUDA's)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range


@dataclass
class RenderConfig:
    backend: Optional[str] = None  # None = gsplat on CUDA, numba on CPU when installed, else torch
    eps2d: float = 0.3

    def validate(self) -> None:
        if self.backend not in RENDER_BACKENDS:
            raise ValueError(f"backend: expected one of null, 'numba', 'torch', 'gsplat', got {self.backend!r}")
        if not (math.isfinite(self.eps2d) and self.eps2d >= 0):
            raise ValueError(f"eps2d: expected a finite screen-space blur >= 0 (pixels^2), got {self.eps2d}")


@dataclass
class FreezeWindow:
    """Keep a parameter group fixed in [start, end) (NPGA: base Gaussians frozen for 5K steps)."""

    group: str = "gaussians"
    start: float = 0.0
    end: float = 0.0
    units: str = "fraction"  # fraction of max_steps | steps

    def validate(self) -> None:
        if self.group not in PARAM_GROUPS and self.group not in GROUP_ALIASES:
            raise ValueError(f"group: expected one of {PARAM_GROUPS + tuple(GROUP_ALIASES)}, got {self.group!r}")
        if self.units not in ("fraction", "steps"):
            raise ValueError(f"units: expected 'fraction' or 'steps', got {self.units!r}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if self.units == "fraction" and not (math.isfinite(v) and 0 <= v <= 1):
                raise ValueError(f"{name}: expected a fraction of training in [0, 1] "
                                 f"(use units: steps for absolute steps), got {v}")
            if self.units == "steps" and not (math.isfinite(v) and v >= 0 and float(v).is_integer()):
                raise ValueError(f"{name}: expected a whole number of steps >= 0 (units: steps), got {v}")
        if self.end < self.start:
            raise ValueError(f"end: expected end >= start, got start={self.start}, end={self.end}")

    def groups(self) -> tuple[str, ...]:
        return GROUP_ALIASES.get(self.group, (self.group,))

    def active(self, step: int, total_steps: int) -> bool:
        scale = total_steps if self.units == "fraction" else 1
        return self.start * scale <= step < self.end * scale


@dataclass
class OptimConfig:
    lr_means: float = 2e-4
    lr_scales: float = 5e-3
    lr_rotations: float = 1e-3
    lr_opacities: float = 2.5e-2
    lr_latents: float = 1e-2
    lr_deform: float = 5e-5  # the roadmap's expression-MLP rate (NPGA 4e-5, our DeformMLP 5e-5)
    lr_decoder: float = 2e-3
    final_lr_ratio: float = 0.1  # exponential decay of every group to this fraction at max_steps
    freeze: List[FreezeWindow] = field(default_factory=list)
    grad_clip: float = 0.0  # 0 = off

    def validate(self) -> None:
        for name in PARAM_GROUPS:
            lr = getattr(self, f"lr_{name}")
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"lr_{name}: expected a finite learning rate >= 0, got {lr}")
        if not 0 < self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio: expected a value in (0, 1], got {self.final_lr_ratio}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip: expected a finite gradient-norm bound >= 0 (0 = off), got {self.grad_clip}")

    def lr(self, group: str) -> float:
        return float(getattr(self, f"lr_{group}"))


@dataclass
class TrainerConfig:
    max_steps: int = 600
    batch_size: int = 2
    eval_every: int = 50
    checkpoint_every: int = 100
    log_every: int = 10
    accelerator: str = "auto"
    num_workers: int = 0
    sample_images: int = 3  # eval frames whose renders are logged as images
    progress_bar: bool = True

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator: expected one of {ACCELERATORS}, got {self.accelerator!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: expected an integer >= 0 (0 = load in the training process), "
                             f"got {self.num_workers}")
        if self.sample_images < 0:
            raise ValueError(f"sample_images: expected an integer >= 0 (0 = log no images), got {self.sample_images}")


EVAL_SPLITS = ("val", "test", "mirror")  # "mirror": the virtual mirror viewpoint (rendered ground truth)


@dataclass
class EvalConfig:
    splits: List[str] = field(default_factory=lambda: ["val", "test"])
    lpips_net: str = "alex"  # part of the evaluation protocol: alex and vgg give different numbers
    lpips_weights_path: Optional[str] = None
    # per-frame metrics are kept for this many of the latest evaluations (an ablation raises it to its window)
    per_frame_history: int = 20
    # the "mirror" split: the virtual mirror viewpoint (reflect.data.mirror) of the display's camera (None: the
    # synthetic head's frontal camera, 2) for a viewer's eye at this head-local point (metres)
    mirror_display_camera: Optional[int] = None
    mirror_eye_m: List[float] = field(default_factory=lambda: [0.0, 0.022, 0.072])

    def validate(self) -> None:
        if self.per_frame_history < 1:
            raise ValueError(f"per_frame_history: expected a positive integer, got {self.per_frame_history}")
        bad = [s for s in self.splits if s not in EVAL_SPLITS]
        if bad or not self.splits or len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits: expected a non-empty subset of {list(EVAL_SPLITS)}, got {list(self.splits)}")
        if len(self.mirror_eye_m) != 3:
            raise ValueError(f"mirror_eye_m: expected a head-local point [x, y, z] in metres, got {list(self.mirror_eye_m)}")
        if self.lpips_net not in ("alex", "vgg"):
            raise ValueError(f"lpips_net: expected 'alex' or 'vgg', got {self.lpips_net!r}")
        if self.mirror_display_camera is not None and self.mirror_display_camera < 0:
            raise ValueError(f"mirror_display_camera: expected a camera index >= 0 or null (the synthetic head's "
                             f"frontal camera, 2), got {self.mirror_display_camera}")


@dataclass
class TrackingConfig:
    wandb: bool = True
    project: str = "reflect"
    entity: Optional[str] = None
    mode: str = "auto"  # auto (online with an API key, else offline) | online | offline | disabled

    def validate(self) -> None:
        if self.mode not in ("auto", "online", "offline", "disabled"):
            raise ValueError(f"mode: expected auto|online|offline|disabled, got {self.mode!r}")


@dataclass
class TrainConfig:
    profile: str = "quick"
    seed: int = 0
    output_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile: expected one of {PROFILES}, got {self.profile!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed: expected an integer in [0, 2**32 - 1], got {self.seed}")
        # The checks across sections whose answer the config already knows (so a --dry-run catches them):
        # how many sessions the training data has, and which cameras the synthetic head has.
        synthetic = self.data.root is None and not self.data.sessions
        shares = self.sampler.session_shares
        if self.sampler.session_balance and shares is not None:
            if synthetic:
                n, where = self.data.synthetic.sessions, f"data.synthetic.sessions={self.data.synthetic.sessions}"
            elif self.data.sessions:
                n, where = len(self.data.sessions), f"data.sessions has {len(self.data.sessions)} entries"
            else:
                n, where = 1, "data.root is one session"
            if len(shares) != n:
                raise ValueError(f"sampler.session_shares: expected {n} share{'s' if n > 1 else ''} (one per session; "
                                 f"{where}), got {len(shares)}: {list(shares)}")
        camera = self.eval.mirror_display_camera
        if synthetic and camera is not None and camera not in SYNTHETIC_CAMERAS:
            raise ValueError(f"eval.mirror_display_camera: expected one of the synthetic head's cameras "
                             f"{list(SYNTHETIC_CAMERAS)} (0, 1: the stereo pair; 2: the frontal one) or null, "
                             f"got {camera}")


# Settings that do not change a trial's result: excluded from its identity hash
# (ablator's stateful/stateless split), so moving a study between machines or
# turning tracking off never re-runs finished work.
NON_IDENTITY_KEYS = (
    "output_dir", "tracking", "render.backend", "trainer.accelerator", "trainer.num_workers",
    "trainer.progress_bar", "trainer.log_every", "trainer.checkpoint_every", "trainer.sample_images",
    "data.preload", "data.root", "data.sessions", "eval.lpips_weights_path", "loss.lpips.weights_path",
    "eval.per_frame_history", "model.flame",  # the FLAME file by content: see identity_dict
)


# Keys added after results stores existed, with the value every earlier trial ran with: left out of the identity
# at that value, so adding a setting never orphans finished trials (their hashes stay what they were).
LATER_KEYS_AT_DEFAULT = {"data.downscale": 1, "data.principal_point": "vhap", "data.eval_sessions": None,
                         "data.synthetic.sessions": 1, "data.synthetic.allowlist": True,
                         "data.synthetic.flavour": "gaussian_avatars", "model.gaussians.init": "auto",
                         "eval.mirror_display_camera": None, "eval.mirror_eye_m": [0.0, 0.022, 0.072],
                         "data.train_timesteps": None}


def identity_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The part of the config that determines results (data is identified by its fingerprint)."""
    from reflect.data import dataset_fingerprint

    d = strip_non_identity(to_plain_dict(cfg))
    for key, default in LATER_KEYS_AT_DEFAULT.items():
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node.get(p, {})
        if node.get(leaf) == default:
            node.pop(leaf, None)
    d["data_fingerprint"] = dataset_fingerprint(cfg.data)
    if cfg.model.flame.model_path:  # the model file's content, not where this machine keeps it
        from reflect.model.flame import flame_model_fingerprint

        d["flame_model"] = flame_model_fingerprint(str(cfg.model.flame.model_path))
    return d


def strip_non_identity(config: dict[str, Any]) -> dict[str, Any]:
    """A plain config dict without the settings that do not change results (in place; returned)."""
    for key in NON_IDENTITY_KEYS:
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return config


def hash_identity(identity: dict[str, Any]) -> str:
    """The 16-hex-digit hash of an identity dict (see :func:`identity_dict`)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(cfg: TrainConfig) -> str:
    """A trial's identity: the hash of its result-relevant config, seed included."""
    return hash_identity(identity_dict(cfg))


def profile_path(name: str) -> Path:
    return PROFILE_DIR / f"{name}.yaml"


def load_train_config(source: Optional[str | Path | dict] = None, overrides: Sequence[str] = (),
                      extra_layers: Sequence[tuple[str, Any]] = ()) -> TrainConfig:
    """Profile or file (or an inline mapping) + overrides → a validated TrainConfig.

    Raises ConfigError naming the file/key on any problem.
    """
    layers: list[tuple[str, Any]] = []
    if source is None:
        source = "quick"
    if isinstance(source, dict):
        data, origin = dict(source), "config"
    elif str(source) in PROFILES:
        data, origin = read_yaml_mapping(profile_path(str(source))), str(profile_path(str(source)))
    else:
        data, origin = read_yaml_mapping(source), str(source)
    base_profile = data.get("profile", "quick")
    if base_profile not in PROFILES:
        raise ConfigError(origin, f"expected one of {PROFILES}, got {base_profile!r}", "profile")
    if origin != str(profile_path(base_profile)):
        layers.append((str(profile_path(base_profile)), read_yaml_mapping(profile_path(base_profile))))
    layers.append((origin, data))
    layers.extend(extra_layers)
    if overrides:
        layers.append(("command line", list(overrides)))
    return merge_into_schema(TrainConfig, layers)
