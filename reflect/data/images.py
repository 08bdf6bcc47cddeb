"""Decoding dataset images and masks, with every PIL failure turned into a DatasetError."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from reflect.data.errors import DatasetError


def _open_decoded(path: Path) -> Image.Image:
    """Open and fully decode (a truncated file only fails on decode, not on open)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
        return img
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode image, expected a readable PNG/JPEG ({exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only: cheap enough for eager validation."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the image header, expected a PNG/JPEG ({exc})") from None


def read_rgba(path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """uint8 RGB [H,W,3] and the image's own alpha [H,W] (None when it has none)."""
    img = _open_decoded(path)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        arr = np.asarray(img.convert("RGBA"))
        return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])
    return np.asarray(img.convert("RGB")).copy(), None


def read_mask(path: Path) -> np.ndarray:
    """uint8 foreground mask [H,W]: the alpha channel if the file has one, else its luminance."""
    rgb, alpha = read_rgba(path)
    if alpha is not None:
        return alpha
    return np.ascontiguousarray(rgb[..., 0])
