"""LossStack: every configured loss term, weighted by its schedule, in one module.

A term whose schedule can never be non-zero is not even constructed (so a
disabled LPIPS needs no weights); a term whose weight is 0 at the current step
is not computed (so deferred terms cost nothing until they start).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from torch import Tensor, nn

from reflect.losses import image_terms as im
from reflect.losses import regularizers as reg
from reflect.losses.adversarial import PatchDiscriminator, discriminator_loss, generator_loss
from reflect.losses.config import TERM_NAMES, LossConfig
from reflect.losses.lpips_loader import load_lpips, lpips_distance
from reflect.losses.schedules import weight_at

if TYPE_CHECKING:
    import lpips


def _need(aux: dict, term: str, *keys: str) -> list[Tensor]:
    missing = [k for k in keys if aux.get(k) is None]
    if missing:
        raise ValueError(f"loss.{term} is enabled but aux lacks {missing} (pass them to LossStack.forward)")
    return [aux[k] for k in keys]


class LossStack(nn.Module):
    """Weighted sum of the enabled loss terms; see :class:`LossConfig` for the terms.

    ``discriminator`` is a :class:`PatchDiscriminator` iff the adversarial term is
    enabled; the training loop owns its optimizer and calls
    :meth:`discriminator_loss` after the generator step.
    """

    discriminator: Optional[PatchDiscriminator]
    _lpips_model: Optional["lpips.LPIPS"]

    def __init__(self, cfg: LossConfig, total_steps: int):
        super().__init__()
        cfg.validate()
        if total_steps < 1:
            raise ValueError(f"total_steps: expected a positive integer, got {total_steps}")
        self.cfg = cfg
        self.total_steps = total_steps
        self._enabled = [name for name in TERM_NAMES if cfg.term(name).enabled]
        self.discriminator = (PatchDiscriminator(cfg.adversarial.channels, cfg.adversarial.layers)
                              if "adversarial" in self._enabled else None)
        lpips_model = load_lpips(cfg.lpips.net, cfg.lpips.weights_path) if "lpips" in self._enabled else None
        # Kept out of the module tree on purpose: LPIPS' weights come from files,
        # not checkpoints, and it must stay in eval mode when Lightning calls .train().
        object.__setattr__(self, "_lpips_model", lpips_model)

    def enabled_terms(self) -> list[str]:
        return list(self._enabled)

    def weights(self, step: int) -> dict[str, float]:
        """Each enabled term's weight at ``step``."""
        return {name: weight_at(self.cfg.term(name).schedule, step, self.total_steps) for name in self._enabled}

    def forward(self, pred: Tensor, target: Tensor, *, step: int, mask: Optional[Tensor] = None,
                aux: Optional[dict] = None) -> tuple[Tensor, dict[str, float]]:
        """Weighted total and logs: ``loss/<term>`` (unweighted), ``weight/<term>``, ``loss/total``."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pixel_mask = mask if self.cfg.masked else None
        aux = aux or {}
        total = pred.sum() * 0.0  # keeps the graph when no term is active at this step
        logs: dict[str, float] = {}
        for name, w in self.weights(step).items():
            if w == 0.0:
                continue
            value = getattr(self, f"_{name}")(pred, target, pixel_mask, aux)
            total = total + w * value
            logs[f"loss/{name}"] = float(value.detach())
            logs[f"weight/{name}"] = w
        logs["loss/total"] = float(total.detach())
        return total, logs

    def discriminator_loss(self, pred_detached: Tensor, target: Tensor, *, step: int) -> Optional[Tensor]:
        """The discriminator's loss on real vs rendered images; None while the adversarial weight is 0."""
        if self.discriminator is None or weight_at(self.cfg.adversarial.schedule, step, self.total_steps) == 0.0:
            return None
        d = self.discriminator
        return discriminator_loss(d(target), d(pred_detached.detach()), self.cfg.adversarial.loss)

    # --- terms: (pred, target, mask, aux) → unweighted scalar ------------------------------
    def _l1(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        return im.l1(pred, target, mask)

    def _dssim(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        return im.dssim(pred, target, self.cfg.dssim.window, mask)

    def _lpips(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        return lpips_distance(self._lpips_model, pred, target).mean()

    def _edge(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        return im.edge(pred, target, self.cfg.edge.mode, mask)

    def _gradient_variance(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        return im.gradient_variance(pred, target, self.cfg.gradient_variance.patch_size)

    def _ffl(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        c = self.cfg.ffl
        return im.focal_frequency(pred, target, c.alpha, c.log_matrix, c.batch_matrix)

    def _tv(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        return im.total_variation(pred)

    def _laplacian(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        latents, knn_index = _need(aux, "laplacian", "latents", "knn_index")
        return reg.laplacian_smoothness(latents, knn_index)

    def _position_reg(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        (offsets,) = _need(aux, "position_reg", "offsets")
        return reg.offset_threshold(offsets, self.cfg.position_reg.threshold)

    def _scale_reg(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        (scales,) = _need(aux, "scale_reg", "scales")
        return reg.scale_threshold(scales, self.cfg.scale_reg.threshold)

    def _adversarial(self, pred: Tensor, target: Tensor, mask: Optional[Tensor], aux: dict) -> Tensor:
        d = self.discriminator
        assert d is not None
        # Frozen while building the generator's graph: its backward then skips
        # the discriminator's weights, which only their own loss should move.
        d.requires_grad_(False)
        try:
            return generator_loss(d(pred), self.cfg.adversarial.loss)
        finally:
            d.requires_grad_(True)
