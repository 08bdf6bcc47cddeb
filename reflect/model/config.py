"""Typed configuration of the avatar model (Gaussians, deformation, decoder)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

EXPR_CONDITIONING = ("none", "concat", "film")
VIEW_CONDITIONING = ("none", "pe")
SR_SCALES = (1, 2, 4)
INIT_SOURCES = ("auto", "points3d", "visual_hull", "ellipsoid")


@dataclass
class GaussiansConfig:
    """Canonical Gaussians, each carrying a latent feature vector that is rasterized."""

    num_gaussians: int = 3000
    latent_dim: int = 16
    init_opacity: float = 0.9
    init_scale: float = 0.0  # metres; 0 = from the mean nearest-neighbour spacing of the init points
    # where the Gaussians start (rigid head; with a FLAME file always on its canonical mesh): "auto" = the
    # export's points3d.ply, else a head-sized ellipsoid; "visual_hull" carves the training mattes (not the
    # default: with two near-frontal cameras the back of the head stays uncarved, see reflect.data.hull)
    init: str = "auto"

    def validate(self) -> None:
        if self.num_gaussians < 1:
            raise ValueError(f"num_gaussians: expected a positive integer, got {self.num_gaussians}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim: expected a positive integer, got {self.latent_dim}")
        if not 0.0 < self.init_opacity < 1.0:
            raise ValueError(f"init_opacity: expected a value in (0, 1), got {self.init_opacity}")
        if self.init_scale < 0:
            raise ValueError(f"init_scale: expected >= 0 (0 = automatic), got {self.init_scale}")
        if self.init not in INIT_SOURCES:
            raise ValueError(f"init: expected one of {INIT_SOURCES}, got {self.init!r}")


@dataclass
class DeformConfig:
    """DeformMLP: (latent, canonical position, expression, jaw/eye pose) → Gaussian offsets."""

    enabled: bool = True
    hidden: int = 64
    layers: int = 2
    expr_dims: int = 10  # leading FLAME expression components fed to the MLP

    def validate(self) -> None:
        if self.hidden < 1 or self.layers < 1:
            raise ValueError(f"hidden: expected hidden >= 1 and layers >= 1, got {self.hidden}, {self.layers}")
        if self.expr_dims < 0:  # the upper bound is the data's (checked when training starts)
            raise ValueError(f"expr_dims: expected an integer >= 0, got {self.expr_dims}")


@dataclass
class DecoderConfig:
    """Screen-space CNN decoder from the rasterized feature image to RGB."""

    blocks: List[int] = field(default_factory=lambda: [2, 2, 1])  # convs per block; [2,2,2] = "6-layer"
    channels: int = 32
    expr_conditioning: str = "none"  # none | concat (FlashAvatar) | film (FiLM)
    expr_dims: int = 10  # leading expression components (+ 3 jaw pose) used for conditioning
    view_conditioning: str = "none"  # none | pe (27-dim positional-encoded view direction)
    view_pe_freqs: int = 4  # 3 + 3*2*4 = 27 dims
    sr_scale: int = 1  # 1 | 2 | 4: render at 1/sr_scale resolution, upsample with a pixel-shuffle head

    def validate(self) -> None:
        if not self.blocks or any(b < 1 for b in self.blocks):
            raise ValueError(f"blocks: expected a non-empty list of positive conv counts, got {list(self.blocks)}")
        if self.channels < 1:
            raise ValueError(f"channels: expected a positive integer, got {self.channels}")
        if self.expr_conditioning not in EXPR_CONDITIONING:
            raise ValueError(f"expr_conditioning: expected one of {EXPR_CONDITIONING}, got {self.expr_conditioning!r}")
        if self.view_conditioning not in VIEW_CONDITIONING:
            raise ValueError(f"view_conditioning: expected one of {VIEW_CONDITIONING}, got {self.view_conditioning!r}")
        if self.view_pe_freqs < 0:
            raise ValueError(f"view_pe_freqs: expected an integer >= 0 (0 = the raw view direction only), "
                             f"got {self.view_pe_freqs}")
        if self.sr_scale not in SR_SCALES:
            raise ValueError(f"sr_scale: expected one of {SR_SCALES}, got {self.sr_scale}")
        if self.expr_dims < 0:  # the upper bound is the data's (checked when training starts)
            raise ValueError(f"expr_dims: expected an integer >= 0, got {self.expr_dims}")


@dataclass
class FlameConfig:
    """The head's skeleton: your FLAME model file (licensed: never shipped or downloaded), or None for the rigid
    head. Its content (not its path) is part of a trial's identity."""

    model_path: Optional[str] = None  # e.g. ~/flame/flame2023.pkl, as GaussianAvatars' users place it

    def validate(self) -> None:
        if self.model_path is not None and not str(self.model_path).strip():
            raise ValueError("model_path: expected the path of a FLAME .pkl file or null (the rigid head)")


@dataclass
class ModelConfig:
    gaussians: GaussiansConfig = field(default_factory=GaussiansConfig)
    deform: DeformConfig = field(default_factory=DeformConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    flame: FlameConfig = field(default_factory=FlameConfig)
