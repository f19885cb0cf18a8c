import numpy as np
import pytest

from ss3d_data import Ss3dError
from ss3d_data.manifest import MeshRecord, canonical_matrix, read_manifest, write_manifest


def _record(iid, **kw):
    base = dict(instance_id=iid, category="chair", source="procedural", licence="CC0-1.0", attribution="",
                path=f"{iid}.ply", faces=12, textured=False, split="train", to_canonical=tuple(map(tuple, np.eye(4))))
    return MeshRecord(**{**base, **kw})


def test_manifest_round_trip_sorted(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(path, [_record("b"), _record("a", split="test")])
    back = read_manifest(path)
    assert [r.instance_id for r in back] == ["a", "b"] and back[0].split == "test"
    assert back[1] == _record("b")
    assert back[0].resolve(path) == tmp_path / "a.ply"


def test_manifest_rejects_duplicates_and_bad_lines(tmp_path):
    with pytest.raises(Ss3dError, match="duplicate"):
        write_manifest(tmp_path / "m.jsonl", [_record("a"), _record("a")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "ss3d-mesh-manifest", "version": 1}\n')
    with pytest.raises(Ss3dError, match="bad.jsonl:1"):
        read_manifest(bad)


def test_canonical_matrix_y_up_to_z_up_unit_box():
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([2.0, 4.0, 1.0])  # tall along Y (up)
    m = canonical_matrix(lo, hi, up_axis="y")
    top = m @ np.array([1.0, 4.0, 0.5, 1.0])  # top centre of the box
    np.testing.assert_allclose(top[:3], [0, 0, 0.5], atol=1e-12)
    corners = np.array([[x, y, z, 1] for x in (0, 2) for y in (0, 4) for z in (0, 1)]) @ m.T
    np.testing.assert_allclose(corners[:, :3].max(0) - corners[:, :3].min(0), [0.5, 0.25, 1.0])


def test_select_records_caps_per_category_and_split_deterministically():
    from ss3d_data.manifest import select_records

    records = [_record(f"{c}{i:02d}", category=c, split="test" if i % 4 == 0 else "train")
               for c in ("cup", "vase") for i in range(12)]
    chosen = select_records(records, ["cup"], {"train": 3, "test": 1})
    assert [r.instance_id for r in chosen] == ["cup00", "cup01", "cup02", "cup03"]
    assert select_records(list(reversed(records)), ["cup"], {"train": 3, "test": 1}) == chosen
    bigger = select_records(records, ["cup"], {"train": 5, "test": 2})
    assert set(chosen) <= set(bigger)
    with pytest.raises(Ss3dError, match="no instances of: lamp"):
        select_records(records, ["cup", "lamp"])
