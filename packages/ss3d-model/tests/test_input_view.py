import math

import cv2
import numpy as np
import pytest
import torch
import trimesh

from ss3d_data.errors import Ss3dError
from ss3d_data.preprocess import crop_to_mask
from ss3d_data.presets import load_preset, section_config
from ss3d_model.cameras import look_at
from ss3d_model.config import ExtractConfig
from ss3d_model.input_view import CAMERA_DISTANCE, camera_axes, fit_input_view, hidden_vertices, input_colours
from ss3d_model.raster import rasterise

RED, BLUE = (220, 30, 30), (30, 40, 220)


def asymmetric_object() -> trimesh.Trimesh:
    """A flat slab with a tall post at one corner and a block at the opposite end: no view repeats another's
    silhouette, so the camera that drew a mask is the one best reproducing it. Red for x < 0, blue for x >= 0."""
    parts = [trimesh.creation.box((0.9, 0.45, 0.1)),
             trimesh.creation.box((0.1, 0.1, 0.6), trimesh.transformations.translation_matrix((0.4, 0.17, 0.35))),
             trimesh.creation.box((0.2, 0.3, 0.25), trimesh.transformations.translation_matrix((-0.35, -0.05, 0.17)))]
    mesh = trimesh.util.concatenate(parts)
    mesh = mesh.subdivide_to_size(0.02)  # vertices about a pixel apart at the fit's resolution, like marching cubes
    mesh.visual.vertex_colors = np.where(mesh.vertices[:, :1] < 0, RED, BLUE).astype(np.uint8)
    return mesh


def photo(mesh, elevation_deg, azimuth_deg, size=256):
    """A render by a camera at the renders' distance (about 40 degrees field of view), cropped like the model's
    input, and its camera."""
    pose = look_at(torch.tensor(math.radians(elevation_deg)), torch.tensor(math.radians(azimuth_deg)),
                   torch.tensor(CAMERA_DISTANCE)).numpy()
    image = rasterise(mesh.vertices, mesh.faces, pose, 350.0, size,
                      colours=np.asarray(mesh.visual.vertex_colors)[:, :3], background=(0, 0, 0))
    mask = (rasterise(mesh.vertices, mesh.faces, pose, 350.0, size, background=(0, 0, 0))[..., 0] > 0)
    crop = crop_to_mask(image, mask.astype(np.uint8) * 255, 128)
    return crop.image, crop.mask >= 128, pose


@pytest.mark.parametrize("elevation, azimuth", [(20.0, 50.0), (-30.0, 200.0), (60.0, 310.0)])
def test_fit_input_view_finds_the_camera_that_drew_the_mask(elevation, azimuth):
    mesh = asymmetric_object()
    _, mask, pose = photo(mesh, elevation, azimuth)
    view = fit_input_view(mesh.vertices, mask)
    forward = pose[:3, 2]
    assert view.silhouette_iou > 0.85
    assert np.degrees(np.arccos(np.clip(view.rotation[2] @ forward, -1, 1))) < 8.0
    assert abs(view.roll_deg) <= 5.0
    # The fitted view puts the vertices where the photo shows them: every projected vertex lands on the mask.
    uv, _ = view.project(mesh.vertices, mask.shape[0])
    ij = np.clip(np.floor(uv).astype(int), 0, mask.shape[0] - 1)
    assert mask[ij[:, 1], ij[:, 0]].mean() > 0.95


def test_fit_input_view_finds_a_rolled_camera():
    mesh = asymmetric_object()
    rotation = camera_axes(math.radians(25.0), math.radians(120.0), math.radians(10.0))
    cam = mesh.vertices @ rotation.T
    uv = cam[:, :2] / (cam[:, 2:] + CAMERA_DISTANCE)
    lo, hi = uv.min(0), uv.max(0)
    pix = (uv - (lo + hi) / 2) * (127.0 / (hi - lo).max()) + 64
    drawn = np.zeros((128, 128), bool)  # a mask drawn by hand, rolled: roll is what the search must find
    drawn[np.clip(pix[:, 1].astype(int), 0, 127), np.clip(pix[:, 0].astype(int), 0, 127)] = True
    drawn = cv2.morphologyEx(drawn.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)
    view = fit_input_view(mesh.vertices, drawn)
    assert view.roll_deg == pytest.approx(10.0, abs=2.5) and view.silhouette_iou > 0.85
    assert np.degrees(np.arccos(np.clip(view.rotation[2] @ rotation[2], -1, 1))) < 8.0


def test_input_colours_paint_what_the_photo_shows_and_the_mean_colour_elsewhere():
    mesh = asymmetric_object()
    image, mask, _ = photo(mesh, 35.0, 30.0)  # seen from above: the slab's underside is hidden
    view = fit_input_view(mesh.vertices, mask)
    colours = input_colours(mesh.vertices, view, image, mask).astype(int)
    truth = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(int)
    hidden = hidden_vertices(mesh.vertices, view, 128)
    underside = mesh.vertices[:, 2] < -0.049
    assert hidden[underside].mean() > 0.9 and not hidden[mesh.vertices[:, 2] > 0.64].any()  # the post's top
    seen = ~hidden
    # Seen vertices: the photo's colour (shaded, so compare which channel dominates), red on the left, blue right.
    dominant_ok = (colours[seen].argmax(1) == truth[seen].argmax(1)).mean()
    assert dominant_ok > 0.9
    mean = image[mask].mean(0)
    assert np.abs(colours[hidden] - mean).max() <= 1


def test_fit_input_view_refuses_degenerate_inputs():
    with pytest.raises(Ss3dError, match="fewer than 3"):
        fit_input_view(np.zeros((2, 3)), np.ones((8, 8), bool))
    with pytest.raises(Ss3dError, match="non-empty"):
        fit_input_view(np.random.default_rng(0).normal(size=(50, 3)), np.zeros((8, 8), bool))


def test_colour_source_is_a_named_extract_setting():
    assert load_preset("paper").section("extract")["colours"] == "network"
    assert load_preset("cpu").section("extract")["colours"] == "input"
    record = {k: v for k, v in load_preset("cpu").section("extract").items() if k != "colours"}
    assert section_config(ExtractConfig, record, "extract").colours == "network"  # older checkpoints' records
    with pytest.raises(Ss3dError, match="colours must be one of network, input"):
        section_config(ExtractConfig, {**record, "colours": "photo"}, "extract")
