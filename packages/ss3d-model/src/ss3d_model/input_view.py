"""Where the input photo saw a reconstruction from, and vertex colours taken from the photo through that view.

The network predicts in the canonical frame and does not say where the input camera was. :func:`fit_input_view`
finds it by silhouette search: a pinhole camera at ``CAMERA_DISTANCE`` looking at the origin (look-at elevation and
azimuth, then roll) whose projection of the mesh, normalised exactly as the input is
(``ss3d_data.preprocess.crop_to_mask``: bounding box scaled to the longer side, centred), overlaps the input mask
best. The crop removes image scale and focal length; what is left of the camera distance is perspective, the near
side drawn larger, and that is what tells a view from its mirror twin (the view from the far side at the opposite
elevation, whose orthographic outline is the same for a mirror-symmetric object): measured on the test images'
true shapes and cameras, perspective found the true camera for 43% of them against 29% without
(``tools/input_view_check.py``, docs/quality.md).

:func:`input_colours` then colours every vertex the photo saw with the pixel it projects onto (bilinear, over an
image whose background holds the nearest object pixel's colour) and every hidden vertex with the photo's mean object
colour: the unseen side is not guessed. Copying the front's colours to the back instead measured worse in views
the model did not see (docs/quality.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ss3d_data.errors import Ss3dError

SEARCH_SIZE = 32    # silhouettes compared at 32 px during the coarse search, 64 px while refining
REFINE_SIZE = 64
# Vertices projected per candidate camera (deterministic subsamples of larger meshes): enough to cover every pixel
# of a 32 px (coarse) and a 64 px (refine) silhouette.
COARSE_POINTS = 4_000
REFINE_POINTS = 16_000
REFINE_ROUNDS = 16  # hill-climbing steps of 2.5 degrees: up to 40 degrees from the coarse winner
MAX_ROLL = 15.0     # degrees: photos are taken roughly upright
# A vertex this far (canonical units; the object box is 1) behind the nearest surface along its ray is hidden: about
# three vertex spacings of a 64^3 mesh, so the visible surface's own bumps stay visible.
HIDDEN_TOLERANCE = 0.05
# The camera's distance from the origin in canonical units (object box 1): the renders' (2.7-3.3 in the presets);
# photos taken from nearer or farther differ only in how strong the perspective is.
CAMERA_DISTANCE = 3.0


@dataclass(frozen=True)
class InputView:
    """A pinhole camera onto the input crop. ``rotation`` [3, 3]: rows are the camera's right, down and forward axes
    in canonical coordinates; the camera sits at ``-distance * rotation[2]``; a canonical point p with camera
    coordinates c = rotation @ p lands on crop pixel ``(c[:2] / (c[2] + distance) - centre) * scale * size + size /
    2`` of a ``size``-pixel crop. ``silhouette_iou`` is the overlap of the projected mesh with the input mask at the
    fit's resolution."""

    rotation: np.ndarray
    centre: np.ndarray
    scale: float  # crop sides per unit of the image plane at focal length 1
    distance: float
    elevation_deg: float
    azimuth_deg: float
    roll_deg: float
    silhouette_iou: float

    def project(self, points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Canonical points [N, 3] -> crop pixel positions [N, 2] (x, y) of a ``size`` crop, depths [N]."""
        cam = np.asarray(points, np.float64) @ self.rotation.T
        depth = cam[:, 2] + self.distance
        return (cam[:, :2] / depth[:, None] - self.centre) * (self.scale * size) + size / 2, depth


def camera_axes(elevation: float, azimuth: float, roll: float) -> np.ndarray:
    """[3, 3] rows right, down, forward of a look-at camera (radians; azimuth 0 on -Y looking at +Y, as
    ``ss3d_model.cameras.look_at``) turned by ``roll`` about its forward axis."""
    ce, se, ca, sa = math.cos(elevation), math.sin(elevation), math.cos(azimuth), math.sin(azimuth)
    forward = np.array([-ce * sa, ce * ca, -se])
    right = np.array([ca, sa, 0.0])
    down = np.cross(forward, right)
    cr, sr = math.cos(roll), math.sin(roll)
    return np.stack([cr * right + sr * down, cr * down - sr * right, forward])


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _silhouette(columns: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """Pixel positions (x [N], y [N]) -> bool [size, size]: the pixels hit, closed by one pixel (a surface's vertices
    lie about a pixel apart at the refine size, so single misses between them are filled)."""
    image = np.zeros((size, size), np.uint8)
    image[np.clip(rows.astype(np.int64), 0, size - 1), np.clip(columns.astype(np.int64), 0, size - 1)] = 1
    return cv2.morphologyEx(image, cv2.MORPH_CLOSE, _CROSS).astype(bool) | image.astype(bool)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_AREA) >= 128


def _score(points_t: np.ndarray, mask: np.ndarray, angles: tuple[float, float, float]
           ) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Silhouette IoU of ``points_t`` [3, N] (transposed: contiguous rows make the per-axis extremes cheap) seen
    from ``angles`` (radians) against ``mask``, the projection normalised like the input crop: the bounding box's
    longer side fills it, centred. -> (IoU, rotation, image-plane centre, crop sides per unit)."""
    size = mask.shape[0]
    rotation = camera_axes(*angles)
    right, down, forward = rotation @ points_t
    depth = forward + CAMERA_DISTANCE
    u, v = right / depth, down / depth
    u_lo, u_hi, v_lo, v_hi = u.min(), u.max(), v.min(), v.max()
    centre = np.array([(u_lo + u_hi) / 2, (v_lo + v_hi) / 2])
    scale = 1.0 / max(u_hi - u_lo, v_hi - v_lo, 1e-9)
    k = scale * size
    # Positions lie in [0, size] by construction, so the integer cast in _silhouette is the floor.
    sil = _silhouette((u - centre[0]) * k + size / 2, (v - centre[1]) * k + size / 2, size)
    union = np.count_nonzero(sil | mask)
    return (np.count_nonzero(sil & mask) / union if union else 0.0), rotation, centre, scale


def fit_input_view(points: np.ndarray, mask: np.ndarray) -> InputView:
    """The view of ``points`` [N, 3] (a mesh's vertices, canonical units) whose silhouette best
    overlaps ``mask`` (bool, the square input crop of ``crop_to_mask``). Coarse search over elevations -80..80 and
    azimuths 0..350 degrees in 10-degree steps without roll at 32 px, then hill climbing in 2.5-degree steps of
    elevation, azimuth and roll (at most ``MAX_ROLL``) at 64 px. Deterministic."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    mask = np.asarray(mask, bool)
    if len(points) < 3:
        raise Ss3dError("cannot fit the input view of a mesh with fewer than 3 vertices")
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1] or not mask.any():
        raise Ss3dError("the input view is fitted to a square, non-empty mask crop")
    order = np.random.default_rng(0).permutation(len(points))
    coarse_points = np.ascontiguousarray(points[order[:COARSE_POINTS]].T)
    points = np.ascontiguousarray(points[order[:REFINE_POINTS]].T)
    coarse_mask = _resize_mask(mask, SEARCH_SIZE)
    coarse = [(float(e), float(a), 0.0) for e in range(-80, 81, 10) for a in range(0, 360, 10)]
    start = max(coarse, key=lambda angles: _score(coarse_points, coarse_mask,
                                                  tuple(math.radians(x) for x in angles))[0])
    fine_mask = _resize_mask(mask, REFINE_SIZE)
    cache: dict[tuple[float, float, float], tuple] = {}

    def fit(angles: tuple[float, float, float]) -> tuple:
        if angles not in cache:
            cache[angles] = _score(points, fine_mask, tuple(math.radians(x) for x in angles))
        return cache[angles]

    # Hill climbing on a 2.5-degree lattice from the coarse winner: each round moves to the best of the 27
    # neighbours (elevation, azimuth, roll each -2.5, 0, +2.5) until none is better.
    current = start
    for _ in range(REFINE_ROUNDS):
        e, a, r = current
        neighbours = [(max(-89.0, min(89.0, e + de)), (a + da) % 360.0, max(-MAX_ROLL, min(MAX_ROLL, r + dr)))
                      for de in (-2.5, 0.0, 2.5) for da in (-2.5, 0.0, 2.5) for dr in (-2.5, 0.0, 2.5)]
        winner = max(neighbours, key=lambda angles: (fit(angles)[0], angles == current))
        if winner == current:
            break
        current = winner
    iou, rotation, centre, scale = fit(current)
    angles = current
    return InputView(rotation, centre, scale, CAMERA_DISTANCE, *angles, silhouette_iou=float(iou))


def filled_background(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``rgb`` [S, S, 3] whose pixels outside ``mask`` hold the colour of the nearest pixel inside it, so
    that vertices projecting just off the object (the fit is never exact) still get the object's colour."""
    outside = (~np.asarray(mask, bool)).astype(np.uint8)
    if not outside.any():
        return np.asarray(rgb).copy()
    _, labels = cv2.distanceTransformWithLabels(outside, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    rows, cols = np.nonzero(outside == 0)
    lookup = np.zeros((labels.max() + 1, 3), np.uint8)
    lookup[labels[rows, cols]] = rgb[rows, cols]
    return lookup[labels]


def input_colours(vertices: np.ndarray, view: InputView, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Vertex colours [V, 3] uint8 from the input crop ``rgb`` [S, S, 3] (its ``mask`` [S, S] bool) through
    ``view``: bilinear samples of the crop (background filled by :func:`filled_background`) where the vertex is
    seen, the mask's mean colour where it is hidden (:func:`hidden_vertices`)."""
    size = rgb.shape[0]
    image = filled_background(rgb, mask).astype(np.float64)
    uv, _ = view.project(vertices, size)
    x = np.clip(uv[:, 0] - 0.5, 0, size - 1)  # pixel centres sit at integer + 0.5
    y = np.clip(uv[:, 1] - 0.5, 0, size - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    colours = top * (1 - fy) + bottom * fy
    colours[hidden_vertices(vertices, view, size)] = rgb[np.asarray(mask, bool)].mean(0)
    return np.clip(np.round(colours), 0, 255).astype(np.uint8)


def hidden_vertices(vertices: np.ndarray, view: InputView, size: int) -> np.ndarray:
    """bool [V]: vertices behind the surface nearest the input camera. The depth buffer holds each pixel's nearest
    vertex (of a ``size`` crop), widened to the 3x3 neighbourhood's nearest so that gaps between vertices do not
    count as seen-through; a vertex more than ``HIDDEN_TOLERANCE`` behind it is hidden."""
    uv, depth = view.project(vertices, size)
    px = np.clip(np.floor(uv).astype(np.int64), 0, size - 1)
    nearest = np.full((size, size), np.inf, np.float32)
    np.minimum.at(nearest, (px[:, 1], px[:, 0]), depth.astype(np.float32))
    nearest = cv2.erode(nearest, np.ones((3, 3), np.uint8))  # grey erosion = the neighbourhood's minimum
    return depth > nearest[px[:, 1], px[:, 0]] + HIDDEN_TOLERANCE
