"""Image-space effects for in-the-wild style collections: procedural backgrounds composited behind the object
(so the RGB is not pre-masked) and degraded masks (so masks are only approximate, as a segmenter's would be).
Pure numpy + Pillow; every function takes the random generator it draws from."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter

BACKGROUND_KINDS = ("colour", "gradient", "noise")


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise [size, size] in [0, 1]: a random ``cells`` x ``cells`` grid upsampled bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0


def random_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """A procedural background [size, size, 3] float32 in [0, 255]: a flat colour, a linear gradient between two
    colours at a random angle, or multi-octave coloured noise. Returns it with a description."""
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    if kind == "colour":
        image = np.broadcast_to(_random_colour(rng), (size, size, 3)).astype(np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
        t = np.clip(xs * np.cos(angle) + ys * np.sin(angle) + 0.5, 0, 1)[..., None]
        image = ((1 - t) * _random_colour(rng) + t * _random_colour(rng)).astype(np.float32)
    else:
        octaves = [_smooth_noise(rng, size, cells) for cells in (3, 7, 17)]
        weight = sum(w * o for w, o in zip((0.6, 0.3, 0.1), octaves))[..., None]
        image = ((1 - weight) * _random_colour(rng) + weight * _random_colour(rng)).astype(np.float32)
    return image, {"kind": kind}


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA uint8 [H, W, 4] over ``background`` [H, W, 3] -> RGB uint8 [H, W, 3]."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * alpha + background * (1 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def degrade_mask(mask: np.ndarray, rng: np.random.Generator, max_radius_px: int) -> tuple[np.ndarray, dict[str, Any]]:
    """An approximate version of ``mask`` [H, W] uint8: eroded or dilated by up to ``max_radius_px`` and with a
    wobbly boundary (smooth noise added to a blurred mask before re-thresholding). Binary 0/255 output; falls
    back to the plain binarised mask if degradation would leave nothing."""
    binary = mask >= 128
    radius = int(rng.integers(0, max_radius_px + 1)) if max_radius_px > 0 else 0
    operation = "erode" if rng.random() < 0.5 else "dilate"
    image = Image.fromarray((binary * 255).astype(np.uint8))
    if radius:
        shape_filter = ImageFilter.MinFilter if operation == "erode" else ImageFilter.MaxFilter
        image = image.filter(shape_filter(2 * radius + 1))
    blur = max(1.0, max_radius_px / 2)
    soft = np.asarray(image.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255.0
    noise_amplitude = float(rng.uniform(0.05, 0.25))
    noise = _smooth_noise(rng, mask.shape[0], max(4, mask.shape[0] // 8))
    if noise.shape != soft.shape:
        noise = np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize(soft.shape[::-1]), np.float32) / 255
    degraded = soft + noise_amplitude * (noise - 0.5) * 2 >= 0.5
    if not degraded.any():
        degraded = binary
    description = {"operation": operation, "radius_px": radius, "boundary_noise": noise_amplitude}
    return (degraded * 255).astype(np.uint8), description
