"""Loading LPIPS without ever downloading, and failing loudly when its weights are absent.

``lpips.LPIPS`` takes its linear layers from files shipped in the ``lpips``
package, but its backbone from torchvision's ImageNet weights, which
torchvision downloads into the torch hub cache on first use. Training and
evaluation machines may have no network, and a silently random backbone would
make every LPIPS number meaningless. So the backbone is read only from the
hub cache (the exact file torchvision itself would use) or from an explicit
``weights_path``; when neither exists, :class:`LpipsUnavailable` says which
files were looked for and how to provide them.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional
from urllib.parse import urlparse

import torch
from torch import Tensor

if TYPE_CHECKING:
    import lpips

LPIPS_NETS = ("alex", "vgg")


class LpipsUnavailable(RuntimeError):
    """LPIPS was asked for but its backbone weights are not on this machine (or unreadable)."""


def _backbone_url(net: str) -> str:
    # torchvision's own weight enums: the cache file names can never drift from torchvision's.
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    return {"alex": AlexNet_Weights.IMAGENET1K_V1, "vgg": VGG16_Weights.IMAGENET1K_V1}[net].url


def backbone_filename(net: str) -> str:
    """The file torchvision caches the backbone as: ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``."""
    if net not in LPIPS_NETS:
        raise ValueError(f"net: expected one of {LPIPS_NETS}, got {net!r}")
    return os.path.basename(urlparse(_backbone_url(net)).path)


def hub_checkpoint_path(net: str) -> Path:
    """Where torchvision looks for (and would download) the backbone: ``<torch.hub.get_dir()>/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_filename(net)


def _unavailable_message(net: str, looked_for: Path, explicit: bool) -> str:
    name = backbone_filename(net)
    how = (f"put {name} (torchvision's ImageNet weights, {_backbone_url(net)}) into "
           f"{hub_checkpoint_path(net).parent}/ (the torch hub cache; set TORCH_HOME to move it), "
           f"or point weights_path (loss.lpips.weights_path / eval.lpips_weights_path) at that file")
    what = "weights_path" if explicit else "the torch hub cache"
    return (f"LPIPS ({net}) needs its backbone weights, looked for {looked_for} ({what}): not found. "
            f"Nothing is downloaded; {how}.")


def lpips_weights_problem(net: str = "alex", weights_path: Optional[str] = None) -> Optional[str]:
    """Why ``load_lpips(net, weights_path)`` would fail for want of the backbone file (None: the file is there).

    Cheap (no loading): for checks before any training starts, such as ``reflect.ablate --dry-run``.
    """
    path = Path(weights_path).expanduser() if weights_path is not None else hub_checkpoint_path(net)
    return None if path.is_file() else _unavailable_message(net, path, explicit=weights_path is not None)


def _load_backbone(model: "lpips.LPIPS", path: Path, net: str) -> None:
    """Copy a torchvision state dict's ``features.*`` into LPIPS' sliced backbone; every weight is required.

    LPIPS splits ``features`` into ``slice1..5`` keeping each layer's index as its
    name, so ``features.3.weight`` lives at ``slice2.3.weight``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's to fix, with the path named
        raise LpipsUnavailable(f"LPIPS ({net}): cannot read backbone weights {path}: {exc}") from None
    # "3.weight" → "slice2.3.weight"
    sliced = {name.split(".", 1)[1]: name for name, _ in model.net.named_parameters()}
    mapped = {}
    if isinstance(state, dict):
        for key, value in state.items():
            layer_key = key.removeprefix("features.")
            if key.startswith("features.") and layer_key in sliced:
                mapped[sliced[layer_key]] = value
    missing = sorted(set(sliced.values()) - set(mapped))
    if missing:
        raise LpipsUnavailable(f"LPIPS ({net}): {path} is not a torchvision {backbone_filename(net)} state dict "
                               f"(found no features.* weight for {len(missing)} backbone tensors, e.g. {missing[0]})")
    try:
        model.net.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise LpipsUnavailable(f"LPIPS ({net}): {path} does not fit the {net} backbone: {exc}") from None


def load_lpips(net: str = "alex", weights_path: Optional[str] = None, pnet_rand: bool = False) -> "lpips.LPIPS":
    """An eval-mode, frozen ``lpips.LPIPS`` (v0.1) with real weights; never downloads.

    Linear layers: the ``lpips`` package's own files. Backbone: ``weights_path``
    (a torchvision state dict) if given, else the torch hub cache file; raises
    :class:`LpipsUnavailable` when it is absent. ``pnet_rand=True`` explicitly
    asks for a random backbone (tests of the wiring only: its values mean nothing).
    Inputs in [0, 1] are mapped to [-1, 1] by :func:`lpips_distance`.
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"net: expected one of {LPIPS_NETS}, got {net!r}")
    if pnet_rand and weights_path is not None:
        raise ValueError("load_lpips: pnet_rand=True asks for a random backbone; do not also pass weights_path")
    path = Path(weights_path).expanduser() if weights_path is not None else hub_checkpoint_path(net)
    problem = None if pnet_rand else lpips_weights_problem(net, weights_path)
    if problem:
        raise LpipsUnavailable(problem)

    import lpips

    with warnings.catch_warnings():
        # lpips calls torchvision with its deprecated `pretrained=` argument; not actionable here.
        warnings.simplefilter("ignore", UserWarning)
        # Always built with a random backbone (no download path exists), then overwritten below.
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if not pnet_rand:
        _load_backbone(model, path, net)
    model.eval().requires_grad_(False)
    return model


def lpips_distance(model: "lpips.LPIPS", pred: Tensor, target: Tensor) -> Tensor:
    """Per-image LPIPS ``[B]`` of ``[B, 3, H, W]`` images in [0, 1] (mapped to [-1, 1], as LPIPS expects)."""
    device = next(model.parameters()).device
    if device != pred.device:
        model.to(pred.device)
    return model(pred, target, normalize=True).flatten()
