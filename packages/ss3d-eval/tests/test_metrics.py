import dataclasses

import numpy as np
import pytest
import trimesh
from scipy.spatial.distance import cdist

from ss3d_eval.align import Similarity, align, fit_similarity, quasi_uniform_rotations, quaternion_to_matrix
from ss3d_eval.metrics import point_scores, score, volume_iou
from ss3d_eval.shapes import make_shape


def _random_similarity(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.eye(4)
    m[:3, :3] = rng.uniform(0.4, 2.5) * quaternion_to_matrix(rng.normal(size=(1, 4)))[0]
    m[:3, 3] = rng.normal(size=3)
    return m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_meshes_under_any_similarity_score_perfectly(asymmetric, cfg, seed):
    gt = make_shape(asymmetric.vertices, asymmetric.faces, "gt")
    pred = gt.transformed(_random_similarity(seed))
    result = score(pred, gt, cfg, f"case{seed}")
    assert result["iou"] > 0.98
    # Chamfer between two independent 10k-point samplings of one surface is not 0 but the sampling floor:
    # the same floor as scoring gt against itself (no alignment involved).
    floor = score(gt, gt, cfg, f"case{seed}", aligned=False)["chamfer_l1"]
    assert result["chamfer_l1"] < floor * 1.05
    assert result["fscore"]["0.02"] > 0.98
    recovered = np.asarray(result["align"]["matrix"]) @ _random_similarity(seed)
    assert np.allclose(recovered, np.eye(4), atol=5e-3)


def test_concentric_spheres_closed_form_without_alignment_and_identical_after_it(cfg):
    r1, r2 = 0.36, 0.45
    small = trimesh.creation.icosphere(5, r1)
    big = trimesh.creation.icosphere(5, r2)
    pred, gt = make_shape(small.vertices, small.faces), make_shape(big.vertices, big.faces)
    fine = dataclasses.replace(cfg, iou_resolution=96)
    raw = score(pred, gt, fine, "spheres", aligned=False)
    assert raw["iou"] == pytest.approx((r1 / r2) ** 3, abs=0.01)
    # Every point of one sphere is exactly r2 - r1 from the other (up to the tessellation's sagitta).
    assert raw["chamfer_l1"] == pytest.approx(r2 - r1, rel=0.02)
    assert raw["chamfer_l2"] == pytest.approx((r2 - r1) ** 2, rel=0.04)
    assert raw["fscore"]["0.05"] == 0.0
    # With scale in the alignment the two spheres become the same sphere.
    aligned = score(pred, gt, fine, "spheres")
    assert aligned["align"]["scale"] == pytest.approx(r2 / r1, rel=2e-3)
    assert aligned["iou"] > 0.98
    assert aligned["chamfer_l1"] < 0.01
    # U-CMR's scale + translation fit finds the same; without alignment nothing changes.
    st = score(pred, gt, dataclasses.replace(fine, align="scale_translation"), "spheres")
    assert st["iou"] > 0.98
    assert score(pred, gt, dataclasses.replace(fine, align="none"), "spheres")["iou"] == raw["iou"]


def test_point_scores_match_brute_force_pairwise_distances():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 3)) * 0.2, rng.normal(size=(200, 3)) * 0.2 + 0.05
    d = cdist(a, b)
    scores = point_scores(a, b, (0.05, 0.1))
    assert scores.chamfer_l1 == pytest.approx(0.5 * (d.min(1).mean() + d.min(0).mean()), rel=1e-12)
    assert scores.chamfer_l2 == pytest.approx(0.5 * ((d.min(1) ** 2).mean() + (d.min(0) ** 2).mean()), rel=1e-12)
    p, r = (d.min(1) < 0.1).mean(), (d.min(0) < 0.1).mean()
    assert scores.fscore["0.1"] == pytest.approx(2 * p * r / (p + r))
    assert scores.precision["0.05"] == pytest.approx((d.min(1) < 0.05).mean())


def test_volume_iou_matches_brute_force_winding_numbers(asymmetric, gwn):
    gt = make_shape(asymmetric.vertices, asymmetric.faces)
    moved = trimesh.creation.box((0.6, 0.5, 0.5))
    moved.apply_translation([0.1, 0.05, -0.1])
    pred = make_shape(moved.vertices, moved.faces)
    iou = volume_iou(pred, gt, 20)
    # Same grid as volume_iou builds (union of the bounds, 5% margin), inside by winding number instead.
    bounds = np.concatenate([pred.bounds(), gt.bounds()])
    lo, hi = bounds.min(0), bounds.max(0)
    side = (hi - lo).max() * 1.1
    axis = (np.arange(20) + 0.5) * side / 20
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) + (lo + hi) / 2 - side / 2
    a = gwn(pts, pred.vertices[pred.faces]) > 0.5
    b = gwn(pts, gt.vertices[gt.faces]) > 0.5
    assert iou == pytest.approx((a & b).sum() / (a | b).sum(), abs=1e-12)
    assert 0.2 < iou < 0.9


def test_fit_similarity_is_exact_on_paired_points():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(40, 3))
    truth = Similarity(1.7, quaternion_to_matrix(rng.normal(size=(1, 4)))[0], np.array([0.3, -1.0, 2.0]))
    fit = fit_similarity(src, truth.apply(src))
    assert fit.scale == pytest.approx(1.7)
    assert np.allclose(fit.rotation, truth.rotation) and np.allclose(fit.translation, truth.translation)


def test_rotation_set_is_proper_and_spread():
    rots = quasi_uniform_rotations(24)
    assert np.allclose(np.einsum("nij,nkj->nik", rots, rots), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rots), 1.0)
    angles = np.arccos(np.clip((np.einsum("aij,bij->ab", rots, rots) - 1) / 2, -1, 1))
    np.fill_diagonal(angles, np.inf)
    assert angles.min() > np.radians(20)  # no two candidates nearly the same


def test_alignment_is_deterministic(asymmetric, tiny_cfg):
    gt = make_shape(asymmetric.vertices, asymmetric.faces)
    pred = gt.transformed(_random_similarity(9))
    assert score(pred, gt, tiny_cfg, "k") == score(pred, gt, tiny_cfg, "k")
    seeded = dataclasses.replace(tiny_cfg, seed=1)
    assert score(pred, gt, seeded, "k")["chamfer_l1"] != score(pred, gt, tiny_cfg, "k")["chamfer_l1"]


def test_align_refuses_degenerate_points():
    from ss3d_data.errors import Ss3dError

    with pytest.raises(Ss3dError):
        align(np.zeros((2, 3)), np.ones((10, 3)))


def test_point_cloud_ground_truth_scores_chamfer_and_refuses_iou(asymmetric, cfg, tmp_path):
    from ss3d_data.errors import Ss3dError
    from ss3d_eval.shapes import load_shape, sample_surface

    mesh = make_shape(asymmetric.vertices, asymmetric.faces)
    points = sample_surface(mesh, 20000, np.random.default_rng(0))
    path = tmp_path / "scan.ply"
    trimesh.PointCloud(points).export(path)
    cloud = load_shape(path)
    assert not cloud.is_mesh and len(cloud.vertices) == 20000
    result = score(mesh.transformed(_random_similarity(4)), cloud, cfg, "scan", ("chamfer",))
    assert result["chamfer_l1"] < 0.01 and result["fscore"]["0.02"] > 0.98
    with pytest.raises(Ss3dError, match="point cloud"):
        score(mesh, cloud, cfg, "scan", ("iou",))


def test_empty_and_missing_files_are_refused(tmp_path):
    from ss3d_data.errors import Ss3dError
    from ss3d_eval.shapes import load_shape

    with pytest.raises(Ss3dError, match="no such mesh file"):
        load_shape(tmp_path / "none.ply")
    (tmp_path / "junk.ply").write_bytes(b"\x00garbage")
    with pytest.raises(Ss3dError, match="junk.ply"):
        load_shape(tmp_path / "junk.ply")
    with pytest.raises(Ss3dError, match="empty"):
        make_shape(np.zeros((3, 3)), np.array([[0, 1, 2]]), "flat")  # one zero-area face: no surface


def test_mask_ellipsoid_floor_recovers_a_rendered_ellipsoid(cfg):
    from ss3d_data.errors import EmptySurface
    from ss3d_eval.predict import ellipsoid_from_mask

    # An analytic ellipse tilted by 30 degrees, semi-axes 40 and 16 px: the fit must give axes 1 : 0.4 : 0.4.
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    angle = np.deg2rad(30)
    u = (xs - 64) * np.cos(angle) + (ys - 64) * np.sin(angle)
    v = -(xs - 64) * np.sin(angle) + (ys - 64) * np.cos(angle)
    mask = (((u / 40) ** 2 + (v / 16) ** 2) <= 1).astype(np.uint8) * 255
    floor = ellipsoid_from_mask(mask)
    _, singular, rows = np.linalg.svd(floor.vertices - floor.vertices.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.sort(singular) / singular.max(), [0.4, 0.4, 1.0], atol=0.02)
    # The long axis points 30 degrees below the image's x axis (image y runs down, the camera frame's y up).
    assert abs(rows[0] @ [np.cos(angle), -np.sin(angle), 0.0]) > 0.999
    # Scored against the true ellipsoid it describes, it is (nearly) perfect after alignment.
    truth = make_shape(floor.vertices * [5.0, 5.0, 5.0], floor.faces, "gt")
    assert score(floor, truth, cfg, "ellipse", ("iou",))["iou"] > 0.95
    with pytest.raises(EmptySurface):
        ellipsoid_from_mask(np.zeros((16, 16), np.uint8))
