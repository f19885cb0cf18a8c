"""The paper's image preprocessing, in one place.

Inputs to the encoder: crop to the mask's bounding box, resize so the longer side is ``size``, zero-pad to a square
``size x size``, background (mask below threshold) set to zero. Supervision views with known cameras are resized as
a whole, and their intrinsics scaled to match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ss3d_data.errors import Ss3dError


@dataclass(frozen=True)
class Cropped:
    """A preprocessed input. ``image`` [S, S, 3] uint8 (background 0), ``mask`` [S, S] uint8.

    ``scale`` and ``offset`` map an original pixel position p (x, y) to ``p * scale + offset`` in the output."""

    image: np.ndarray
    mask: np.ndarray
    scale: float
    offset: tuple[float, float]


def _check(image: np.ndarray, mask: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise Ss3dError(f"image must be 8-bit RGB [H, W, 3], got {image.dtype} {image.shape}")
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise Ss3dError(f"mask must be 8-bit single-channel [H, W], got {mask.dtype} {mask.shape}")
    if mask.shape != image.shape[:2]:
        raise Ss3dError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}")


def crop_to_mask(image: np.ndarray, mask: np.ndarray, size: int, threshold: float = 0.5) -> Cropped:
    """Crop to the box of ``mask >= threshold * 255``, resize the longer side to ``size``, zero-pad to square."""
    _check(image, mask)
    fg = mask >= round(threshold * 255)
    if not fg.any():
        raise Ss3dError("the mask is empty: no foreground pixel to reconstruct")
    rows, cols = np.nonzero(fg.any(axis=1))[0], np.nonzero(fg.any(axis=0))[0]
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h, w = y1 - y0, x1 - x0
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    masked = np.where(fg[..., None], image, 0).astype(np.uint8)
    crop_img = Image.fromarray(masked[y0:y1, x0:x1]).resize((new_w, new_h), Image.BILINEAR)
    crop_mask = Image.fromarray(np.where(fg, mask, 0).astype(np.uint8)[y0:y1, x0:x1]).resize(
        (new_w, new_h), Image.BILINEAR
    )
    out_img = np.zeros((size, size, 3), np.uint8)
    out_mask = np.zeros((size, size), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out_img[top : top + new_h, left : left + new_w] = np.asarray(crop_img)
    out_mask[top : top + new_h, left : left + new_w] = np.asarray(crop_mask)
    out_img[out_mask < round(threshold * 255)] = 0
    sx, sy = new_w / w, new_h / h
    return Cropped(out_img, out_mask, float((sx + sy) / 2), (left - x0 * sx, top - y0 * sy))


def resize_view(
    image: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize a square supervision view (image, mask) to ``size x size`` and scale its 3x3 intrinsics to match."""
    _check(image, mask)
    h, w = mask.shape
    if h != w:
        raise Ss3dError(f"supervision views must be square, got {w}x{h}")
    if h == size:
        return image, mask, intrinsics.astype(np.float32)
    s = size / h
    img = np.asarray(Image.fromarray(image).resize((size, size), Image.BOX if s < 1 else Image.BILINEAR))
    msk = np.asarray(Image.fromarray(mask).resize((size, size), Image.BOX if s < 1 else Image.BILINEAR))
    k = intrinsics.astype(np.float32).copy()
    k[:2] *= s  # pixel-centre convention (centre at +0.5) makes plain scaling exact
    return img, msk, k
