"""Typed loss configuration: one weight schedule per term, plus each term's own settings.

Every class is a plain dataclass usable as an OmegaConf structured config. A term
is enabled iff its schedule can be non-zero, so ablating a term is one override
(``loss.edge.schedule.value=0``). ``validate()`` on a term checks its own fields
with keys relative to the term (the config loader prefixes the dotted path);
:meth:`LossConfig.validate` names the full key, ``loss.<term>.<field>``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

SCHEDULE_KINDS = ("constant", "linear", "step", "deferred_exp")
SCHEDULE_UNITS = ("fraction", "steps")
LPIPS_NETS = ("alex", "vgg")
EDGE_MODES = ("grey", "rgb")
ADVERSARIAL_LOSSES = ("nonsaturating", "hinge")


def _within(prefix: str, check: Callable[[], None]) -> None:
    """Run a nested ``validate()`` and put ``prefix.`` in front of the key its error names."""
    try:
        check()
    except ValueError as exc:
        raise ValueError(f"{prefix}.{exc}") from None


@dataclass
class ScheduleConfig:
    """A loss weight as a function of the training step.

    constant: ``value``. step: ``initial`` before ``start``, ``value`` from ``start`` on.
    linear: ``initial`` before ``start``, linear to ``value`` at ``end``, ``value`` after.
    deferred_exp (TeGA: "0 until 50K, exponential ramp to 0.1 by 100K"): 0 before
    ``start``, ``value·(exp(k·p)−1)/(exp(k)−1)`` with ``p`` the progress in
    [start, end] and ``k = sharpness``, ``value`` after ``end``.
    ``start``/``end`` are fractions of training (``units: fraction``), so a
    shortened run keeps the schedule's shape, or absolute steps (``units: steps``).
    """

    kind: str = "constant"
    value: float = 0.0
    initial: float = 0.0
    start: float = 0.0
    end: float = 1.0
    units: str = "fraction"
    sharpness: float = 5.0

    def validate(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"kind: expected one of {SCHEDULE_KINDS}, got {self.kind!r}")
        if self.units not in SCHEDULE_UNITS:
            raise ValueError(f"units: expected one of {SCHEDULE_UNITS}, got {self.units!r}")
        for name in ("value", "initial"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: expected a finite weight >= 0, got {v}")
        if self.kind == "deferred_exp" and self.initial != 0:
            raise ValueError(f"initial: expected 0 for deferred_exp (it is 0 before start by definition), "
                             f"got {self.initial}")
        if self.start < 0:
            raise ValueError(f"start: expected >= 0, got {self.start}")
        if self.units == "fraction":
            for name in ("start", "end"):
                v = getattr(self, name)
                if v > 1:
                    raise ValueError(f"{name}: expected a fraction of training in [0, 1] "
                                     f"(use units: steps for absolute steps), got {v}")
        if self.kind in ("linear", "deferred_exp") and not self.end > self.start:
            raise ValueError(f"end: expected end > start for a {self.kind} ramp, "
                             f"got start={self.start}, end={self.end}")
        if not (math.isfinite(self.sharpness) and self.sharpness > 0):
            raise ValueError(f"sharpness: expected a finite value > 0, got {self.sharpness}")

    def can_be_nonzero(self) -> bool:
        """Whether some step gets a non-zero weight: the term's on/off switch."""
        if self.kind in ("linear", "step"):
            return self.value != 0 or self.initial != 0
        return self.value != 0


def constant(value: float) -> ScheduleConfig:
    return ScheduleConfig(kind="constant", value=value)


@dataclass
class TermConfig:
    """A loss term that has nothing to configure but its weight."""

    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def validate(self) -> None:
        _within("schedule", self.schedule.validate)

    @property
    def enabled(self) -> bool:
        return self.schedule.can_be_nonzero()


@dataclass
class DssimConfig(TermConfig):
    """D-SSIM = 1 − SSIM with a Gaussian window (σ = 1.5) of ``window`` pixels, as in GaussianAvatars."""

    window: int = 11

    def validate(self) -> None:
        super().validate()
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"window: expected an odd size >= 3, got {self.window}")


@dataclass
class LpipsConfig(TermConfig):
    """LPIPS loss; its backbone needs torchvision's ImageNet weights (see ``lpips_loader``)."""

    net: str = "alex"
    weights_path: Optional[str] = None  # a torchvision backbone state dict; None = the torch hub cache

    def validate(self) -> None:
        super().validate()
        if self.net not in LPIPS_NETS:
            raise ValueError(f"net: expected one of {LPIPS_NETS}, got {self.net!r}")


@dataclass
class EdgeConfig(TermConfig):
    """L1 between Sobel gradients of prediction and target, on the grey image or per RGB channel."""

    mode: str = "grey"

    def validate(self) -> None:
        super().validate()
        if self.mode not in EDGE_MODES:
            raise ValueError(f"mode: expected one of {EDGE_MODES}, got {self.mode!r}")


@dataclass
class GradientVarianceConfig(TermConfig):
    """Gradient Variance loss (Abrahamyan et al. 2022) over non-overlapping patches."""

    patch_size: int = 8

    def validate(self) -> None:
        super().validate()
        if self.patch_size < 2:
            raise ValueError(f"patch_size: expected an integer >= 2 (a variance needs 2 pixels), "
                             f"got {self.patch_size}")


@dataclass
class FflConfig(TermConfig):
    """Focal Frequency Loss (Jiang et al. 2021); ``alpha`` scales the spectrum weight |ΔF|^α."""

    alpha: float = 1.0
    log_matrix: bool = False  # weight log(1 + |ΔF|^α) instead
    batch_matrix: bool = False  # normalise the weight by the batch max instead of per image and channel

    def validate(self) -> None:
        super().validate()
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha: expected a finite value > 0, got {self.alpha}")


@dataclass
class LaplacianConfig(TermConfig):
    """Laplacian smoothness of per-Gaussian latents over a kNN graph in canonical space (NPGA)."""

    k: int = 8

    def validate(self) -> None:
        super().validate()
        if self.k < 1:
            raise ValueError(f"k: expected a positive number of neighbours, got {self.k}")


@dataclass
class ThresholdRegConfig(TermConfig):
    """Penalise only the part of a magnitude above ``threshold`` (metres), as GaussianAvatars does."""

    threshold: float = 0.0

    def validate(self) -> None:
        super().validate()
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"threshold: expected a finite value >= 0 (metres), got {self.threshold}")


@dataclass
class AdversarialConfig(TermConfig):
    """PatchGAN adversarial term; the discriminator trains with its own Adam at ``lr``.

    The default non-saturating GAN loss gives the generator ``softplus(−D(fake))``,
    whose gradient stays large while the discriminator wins; ``hinge`` is the
    alternative for comparison.
    """

    lr: float = 2e-4
    channels: int = 64  # width of the first conv; doubled per downsampling layer
    layers: int = 3  # stride-2 convs before the 1-channel patch-logit conv
    loss: str = "nonsaturating"  # nonsaturating | hinge

    def validate(self) -> None:
        super().validate()
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a learning rate > 0, got {self.lr}")
        if self.channels < 1:
            raise ValueError(f"channels: expected a positive integer, got {self.channels}")
        if not 1 <= self.layers <= 5:
            raise ValueError(f"layers: expected 1..5 downsampling convs, got {self.layers}")
        if self.loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"loss: expected one of {ADVERSARIAL_LOSSES}, got {self.loss!r}")


TERM_NAMES = ("l1", "dssim", "lpips", "edge", "gradient_variance", "ffl", "tv",
              "laplacian", "position_reg", "scale_reg", "adversarial")


# GaussianAvatars' image loss is (1 − λ)·L1 + λ·D-SSIM with λ = 0.2; edge is the
# roadmap's current Sobel edge loss at 0.1. Every other term is off by default
# (LPIPS too, so the quick profile runs on machines without backbone weights).
# The regulariser thresholds translate GaussianAvatars' (1 and 0.6 triangle
# sizes) with a ~5 mm FLAME triangle.
@dataclass
class LossConfig:
    l1: TermConfig = field(default_factory=lambda: TermConfig(constant(0.8)))
    dssim: DssimConfig = field(default_factory=lambda: DssimConfig(constant(0.2)))
    lpips: LpipsConfig = field(default_factory=LpipsConfig)
    edge: EdgeConfig = field(default_factory=lambda: EdgeConfig(constant(0.1)))
    gradient_variance: GradientVarianceConfig = field(default_factory=GradientVarianceConfig)
    ffl: FflConfig = field(default_factory=FflConfig)
    tv: TermConfig = field(default_factory=TermConfig)
    laplacian: LaplacianConfig = field(default_factory=LaplacianConfig)
    position_reg: ThresholdRegConfig = field(default_factory=lambda: ThresholdRegConfig(threshold=0.005))
    scale_reg: ThresholdRegConfig = field(default_factory=lambda: ThresholdRegConfig(threshold=0.003))
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    # Restrict the per-pixel terms (l1, dssim, edge) to the mask. Off by default:
    # GaussianAvatars trains on the full image, the background colour already
    # composited into the target, which keeps floaters out of the background.
    masked: bool = False

    def validate(self) -> None:
        for name in TERM_NAMES:
            _within(f"loss.{name}", getattr(self, name).validate)

    def term(self, name: str) -> TermConfig:
        return getattr(self, name)
