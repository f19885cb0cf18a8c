"""The paper's image preprocessing, in one place.

Inputs to the encoder: crop to the mask's bounding box, resize so the longer side is ``size``, zero-pad to a square
``size x size``, background (mask below threshold) set to zero. Supervision views with known cameras are resized as
a whole, and their intrinsics scaled to match.

A checkpoint may ask for its inputs another way (the authors' released model: ``ss3d_model.official``): a zero
margin around the box, at the photo's own pixel scale, and the photo multiplied by its soft mask. Those inputs are
made in the authors' order: pad the crop to a square, pad the margin, resize the whole square.
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


def crop_to_mask(image: np.ndarray, mask: np.ndarray, size: int, threshold: float = 0.5, margin_px: int = 0,
                 soft_mask: bool = False) -> Cropped:
    """Crop to the box of ``mask >= threshold * 255``, resize the longer side to ``size``, zero-pad to square.

    With ``margin_px`` > 0 or ``soft_mask`` the input is made as the authors' demo and image-collection loader make
    theirs: the box's pixels (times ``mask / 255`` with ``soft_mask``, else zero below the threshold) are padded with
    zeros to a square (``(side - w) // 2`` on each side, so an odd difference leaves it one pixel short, which the
    resize then stretches, as theirs does), then by ``margin_px`` on every side, and that whole picture is resized
    to ``size x size``; nothing is zeroed after the resize."""
    _check(image, mask)
    if margin_px < 0:
        raise Ss3dError(f"the crop margin must be >= 0 pixels, got {margin_px}")
    fg = mask >= round(threshold * 255)
    if not fg.any():
        raise Ss3dError("the mask is empty: no foreground pixel to reconstruct")
    rows, cols = np.nonzero(fg.any(axis=1))[0], np.nonzero(fg.any(axis=0))[0]
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if margin_px or soft_mask:
        return _padded_crop(image, mask, fg, (y0, y1, x0, x1), size, margin_px, soft_mask)
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


def _padded_crop(image: np.ndarray, mask: np.ndarray, fg: np.ndarray, box: tuple[int, int, int, int], size: int,
                 margin_px: int, soft_mask: bool) -> Cropped:
    """:func:`crop_to_mask`'s square-pad, margin, then resize path."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    if soft_mask:
        # float32 product truncated to 8 bits, the arithmetic of the authors' loader (uint8 * float32 mask).
        weight = mask[y0:y1, x0:x1].astype(np.float32) / np.float32(255)
        pixels = (image[y0:y1, x0:x1].astype(np.float32) * weight[..., None]).astype(np.uint8)
        alpha = mask[y0:y1, x0:x1]
    else:
        pixels = np.where(fg[y0:y1, x0:x1, None], image[y0:y1, x0:x1], 0).astype(np.uint8)
        alpha = np.where(fg[y0:y1, x0:x1], mask[y0:y1, x0:x1], 0).astype(np.uint8)
    side = max(h, w)
    pad_x, pad_y = (side - w) // 2 + margin_px, (side - h) // 2 + margin_px
    canvas_w, canvas_h = w + 2 * pad_x, h + 2 * pad_y
    canvas = np.zeros((canvas_h, canvas_w, 3), np.uint8)
    canvas_mask = np.zeros((canvas_h, canvas_w), np.uint8)
    canvas[pad_y : pad_y + h, pad_x : pad_x + w] = pixels
    canvas_mask[pad_y : pad_y + h, pad_x : pad_x + w] = alpha
    out_img = np.array(Image.fromarray(canvas).resize((size, size), Image.BILINEAR))
    out_mask = np.array(Image.fromarray(canvas_mask).resize((size, size), Image.BILINEAR))
    sx, sy = size / canvas_w, size / canvas_h
    return Cropped(out_img, out_mask, float((sx + sy) / 2),
                   (float((pad_x - x0) * sx), float((pad_y - y0) * sy)))


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
