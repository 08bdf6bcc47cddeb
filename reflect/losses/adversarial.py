"""A small PatchGAN discriminator and the GAN losses for the adversarial term.

The discriminator scores overlapping patches real/fake, which pushes the
avatar toward realistic local texture (skin pores, hair strands) that
per-pixel losses blur. Spectral normalisation keeps it stable at the small
batch sizes of avatar training, where batch norm would not be.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """``layers`` stride-2 4×4 convs (``channels``, 2×, 4×, …) then a 1-channel patch-logit conv."""

    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = in_channels
        for i in range(layers):
            c_out = channels * 2**i
            blocks += [spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        blocks.append(spectral_norm(nn.Conv2d(c_in, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, img: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] → patch logits ``[B, 1, h, w]``."""
        return self.net(img * 2.0 - 1.0)


def generator_loss(fake_logits: Tensor, kind: str) -> Tensor:
    """Non-saturating: ``mean softplus(−D(fake))`` (= −log σ(D(fake))); hinge: ``−mean D(fake)``."""
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    return -fake_logits.mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str) -> Tensor:
    """Non-saturating: the logistic loss ``softplus(−D(real)) + softplus(D(fake))``; hinge: ``relu(1 ∓ D)``."""
    if kind == "nonsaturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
