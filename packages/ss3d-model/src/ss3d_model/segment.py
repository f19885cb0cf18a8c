"""Automatic foreground mask for an unsegmented photo: GrabCut seeded with the image border as background.

The model needs a silhouette; a user with a plain RGB photo of one object usually has none. Product-style photos
frame the object near the centre with background all around, which is exactly the prior GrabCut needs: a thin
border band starts as sure background, the centre as probable foreground, and the colour models sort out the rest.
The result is a starting point the user can check and correct (``ss3d-model reconstruct`` writes it next to the
mesh), not ground truth. Measured against rendered silhouettes in tests/test_auto_mask.py.
"""

from __future__ import annotations

import cv2
import numpy as np

from ss3d_data.errors import Ss3dError

# GrabCut costs pixels x iterations; the model sees 224 px anyway, so segment a copy this size and upsample the mask.
WORK_SIDE = 288
BORDER_FRACTION = 0.03  # sure-background band: thin, so an object reaching close to the frame is not cut off
# Side of the central box seeded probable foreground, as a fraction of the image side; the ring between it and the
# border starts as probable background. Measured on rendered objects over procedural backdrops: 0.5 misses parts of
# large objects (their outer parts teach the background model the object's colours), 1.0 (GrabCut's usual
# "rectangle = whole image") leaves more backdrop inside thin objects; 0.7 did best on both.
CENTRE_FRACTION = 0.7
ITERATIONS = 6  # GrabCut's energy flattens out after about five rounds on object photos
RELEASE_ITERATIONS = 2  # then with the border band released (see below); measured: +0.1-0.2 points of mean IoU
# An object under 0.5% of the frame (e.g. 16x16 px at 224) leaves the model nothing to reconstruct; over 90% means
# GrabCut found no background distinct from the object (a uniform or busy image): both are failures, not masks.
MIN_AREA, MAX_AREA = 0.005, 0.90
_HINT = "pass --mask with a mask (255 = object) or an RGBA image whose alpha is the mask"


def auto_mask(rgb: np.ndarray) -> np.ndarray:
    """Segment the main object of a photo: rgb uint8 [H, W, 3] -> mask uint8 [H, W] of 0 and 255.

    Raises ``Ss3dError`` when no plausible foreground is found (less than ``MIN_AREA`` or more than ``MAX_AREA``
    of the pixels).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"auto_mask needs uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    height, width = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(height, width))
    small_size = (max(8, round(width * scale)), max(8, round(height * scale)))
    small = cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    seeds = _seeds(small.shape[:2])
    background_model, foreground_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    image = np.ascontiguousarray(small)
    cv2.grabCut(image, seeds, None, background_model, foreground_model, ITERATIONS, cv2.GC_INIT_WITH_MASK)
    if RELEASE_ITERATIONS:
        # The sure-background band cuts off an object that runs out of the frame (a photo cropped at the table). Once
        # the colour models are learnt, let the band's pixels follow them too.
        seeds[seeds == cv2.GC_BGD] = cv2.GC_PR_BGD
        cv2.grabCut(image, seeds, None, background_model, foreground_model, RELEASE_ITERATIONS, cv2.GC_EVAL)
    foreground = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    foreground = _clean(foreground)
    mask = foreground.astype(np.uint8) * 255
    if scale < 1:
        # Upsample the soft edge and re-threshold: smoother than nearest-neighbour stair steps.
        mask = cv2.resize(cv2.GaussianBlur(mask, (3, 3), 0), (width, height), interpolation=cv2.INTER_LINEAR)
        mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    fraction = float((mask > 0).mean())
    if fraction < MIN_AREA:
        raise Ss3dError(f"no foreground object found in the image (automatic mask covers {fraction:.1%})",
                        hint=_HINT)
    if fraction > MAX_AREA:
        raise Ss3dError(f"no background found around the object (automatic mask covers {fraction:.0%} of the image)",
                        hint=_HINT)
    return mask


def _seeds(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    seeds = np.full(shape, cv2.GC_PR_BGD, np.uint8)
    band = max(1, round(BORDER_FRACTION * min(height, width)))
    y0, x0 = round(height * (1 - CENTRE_FRACTION) / 2), round(width * (1 - CENTRE_FRACTION) / 2)
    seeds[y0:height - y0, x0:width - x0] = cv2.GC_PR_FGD
    seeds[:band], seeds[-band:], seeds[:, :band], seeds[:, -band:] = (cv2.GC_BGD,) * 4
    return seeds


def _clean(foreground: np.ndarray) -> np.ndarray:
    """Keep the object's components, fill its small holes, smooth the outline."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    # Opening first removes one-pixel bridges that would glue background speckle to the object.
    binary = cv2.morphologyEx(foreground.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.zeros_like(foreground)
    areas = stats[1:, cv2.CC_STAT_AREA]
    # An object can fall apart into pieces (a lamp's shade and base when the thin pole is lost): keep every piece
    # at least a fifth of the largest. Also keeping smaller pieces near the centre was tried and kept backdrop blobs.
    keep = [i + 1 for i, area in enumerate(areas) if area >= 0.2 * areas.max()]
    kept = np.isin(labels, keep)
    # Holes under 2% of the object are specks where its colour matched the backdrop (highlights, texture); larger
    # ones are real openings (a mug's handle, the gap under a chair's seat) and stay open.
    holes, hole_labels, hole_stats, _ = cv2.connectedComponentsWithStats((~kept).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([hole_labels[0], hole_labels[-1], hole_labels[:, 0], hole_labels[:, -1]])))
    small = [j for j in range(1, holes) if j not in border and hole_stats[j, cv2.CC_STAT_AREA] < 0.02 * kept.sum()]
    filled = kept | np.isin(hole_labels, small)
    return cv2.morphologyEx(filled.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
