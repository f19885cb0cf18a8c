import json

import numpy as np
import pytest

from ss3d_data import Ss3dError
from ss3d_data.sidecar import read_cameras, write_cameras


def _camera(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = np.array([[100.0 + seed, 0, 64], [0, 100.0 + seed, 64], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, 3] = rng.normal(size=3)
    return k, c2w


def test_round_trip_sorted_by_key(tmp_path):
    rows = [("b-v01", *_camera(1)), ("a", *_camera(2))]
    path = write_cameras(tmp_path / "coll.cameras.jsonl", rows)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["a", "b-v01"]
    assert lines[0]["format"] == "ss3d-cameras" and lines[0]["version"] == 1
    back = read_cameras(path)
    np.testing.assert_array_equal(back["b-v01"][0], rows[0][1])
    np.testing.assert_array_equal(back["a"][1], rows[1][2])
    # a mapping as read_cameras returns it writes the same file
    again = write_cameras(tmp_path / "again.jsonl", back)
    assert again.read_text() == path.read_text()


def test_untagged_renderer_lines_read_as_version_1(tmp_path):
    k, c2w = _camera(3)
    path = tmp_path / "cameras.jsonl"
    path.write_text(json.dumps({"key": "cup_1", "intrinsics": k.tolist(), "cam2world": c2w.tolist()}) + "\n")
    assert set(read_cameras(path)) == {"cup_1"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "not JSON"),
        ('{"format": "ss3d-cameras", "version": 2, "key": "a"}', "v1 record"),
        ('{"key": "a.b", "intrinsics": [], "cam2world": []}', "invalid key"),
        ('{"key": "a", "intrinsics": [[1, 0], [0, 1]], "cam2world": [[1, 0, 0, 0]]}', "must be intrinsics"),
        ('{"key": "a"}', "needs intrinsics and cam2world"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "cameras.jsonl"
    path.write_text("\n" + line + "\n")
    with pytest.raises(Ss3dError, match=message) as info:
        read_cameras(path)
    assert "cameras.jsonl:2" in str(info.value)


def test_duplicates_and_bad_last_row_are_refused(tmp_path):
    k, c2w = _camera(0)
    with pytest.raises(Ss3dError, match="duplicate"):
        write_cameras(tmp_path / "x.jsonl", [("a", k, c2w), ("a", k, c2w)])
    bad = c2w.copy()
    bad[3, 0] = 1
    with pytest.raises(Ss3dError, match="0, 0, 0, 1"):
        write_cameras(tmp_path / "x.jsonl", [("a", k, bad)])
    with pytest.raises(Ss3dError, match="no such camera sidecar"):
        read_cameras(tmp_path / "missing.jsonl")
