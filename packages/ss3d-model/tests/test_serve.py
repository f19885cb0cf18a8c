import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import trimesh
from PIL import Image

from ss3d_model.serve import Reconstructor, make_server, parse_multipart

CAP = 200_000  # upload cap of the test server, in bytes


@pytest.fixture(scope="module")
def url(checkpoint):
    server = make_server(Reconstructor.load(checkpoint, preset="tiny", threshold=0.3), port=0,
                         max_upload_bytes=CAP)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.url
    server.shutdown()
    server.server_close()


def png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def rgba_png():
    data = np.zeros((70, 90, 4), np.uint8)
    data[15:50, 20:60] = [200, 60, 30, 255]
    return png(data)


def multipart(fields):
    """{name: bytes or (filename, bytes)} -> (body, content type), as a browser's form posts them."""
    boundary = "ss3d-test-boundary"
    parts = []
    for name, value in fields.items():
        filename, data = value if isinstance(value, tuple) else (None, value)
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url, fields):
    """-> (status, JSON answer)"""
    body, content_type = multipart(fields)
    request = urllib.request.Request(url + "api/reconstruct", body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def get(url, path):
    with urllib.request.urlopen(url + path.lstrip("/"), timeout=30) as response:
        return response.headers, response.read()


def test_multipart_keeps_binary_bytes_exactly():
    data = bytes(range(256)) * 3 + b"\r\n--\r\n\r\n"
    body, content_type = multipart({"image": ("a b.png", data), "threshold": b"0.1"})
    fields = parse_multipart(body, content_type)
    assert fields["image"].data == data and fields["image"].filename == "a b.png"
    assert fields["threshold"].data == b"0.1" and fields["threshold"].filename == ""


def test_page_and_its_static_files(url):
    headers, page = get(url, "/")
    assert headers["Content-Type"].startswith("text/html") and b"<canvas" in page
    assert f'content="{CAP}"'.encode() in page
    assert b'placeholder="0.3"' in page  # the threshold in force
    for name in ("viewer.js", "app.js", "style.css"):
        assert get(url, f"/static/{name}")[1]


def test_upload_gives_mask_turntable_viewer_data_and_downloads(url):
    status, answer = post(url, {"image": ("chair.png", rgba_png())})
    assert status == 200, answer
    assert answer["mask_source"] == "alpha" and answer["faces"] > 0 and answer["name"] == "chair"
    mask = np.asarray(Image.open(io.BytesIO(get(url, answer["urls"]["mask"])[1])))
    assert mask.shape == (70, 90) and mask[30, 40] == 255 and mask[5, 5] == 0
    assert Image.open(io.BytesIO(get(url, answer["urls"]["turntable"])[1])).size == (4 * 192, 192)
    v, f = answer["vertices"], answer["faces"]
    assert len(get(url, answer["urls"]["viewer"])[1]) == 27 * v + 12 * f
    for kind in ("glb", "obj", "ply"):
        headers, data = get(url, answer["urls"][kind])
        assert f'filename="chair.{kind}"' in headers["Content-Disposition"]
        mesh = trimesh.load(io.BytesIO(data), file_type=kind, force="mesh")
        assert len(mesh.faces) == f


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(url):
    status, answer = post(url, {"image": ("my photo.png", b"\x89PNG not an image at all")})
    assert status == 400 and answer["error"].startswith("my photo.png: unreadable image")
    assert "\n" not in answer["error"]
    assert "ss3d-serve-" not in answer["error"]  # no temporary paths
    rgb = png(np.full((40, 50, 3), 120, np.uint8))
    status, answer = post(url, {"image": ("photo.png", rgb), "mask": ("mask.png", png(np.zeros((40, 50), np.uint8)))})
    assert status == 400 and "mask is empty" in answer["error"]
    status, answer = post(url, {"image": ("big.png", rgb + bytes(CAP))})
    assert status == 413 and "limit" in answer["error"]
    status, answer = post(url, {"image": ("photo.png", rgb), "threshold": b"lots"})
    assert status == 400 and "not a number" in answer["error"]
    status, answer = post(url, {"mask": ("mask.png", rgb)})
    assert status == 400 and "no photo" in answer["error"]
    with pytest.raises(urllib.error.HTTPError) as err:
        get(url, "/results/0123456789abcdef/mesh.glb")
    assert err.value.code == 404 and "no longer kept" in json.load(err.value)["error"]
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 5:45] = 255
    status, answer = post(url, {"image": ("photo.jpg", rgb), "mask": ("mask.png", png(mask))})
    assert status == 200 and answer["mask_source"] == "mask file", answer


def test_photo_without_mask_or_alpha_gets_an_automatic_mask(url):
    photo = np.full((80, 80, 3), 110, np.uint8)
    photo[20:60, 25:55] = [220, 40, 40]
    status, answer = post(url, {"image": ("photo.jpg", png(photo))})
    assert status == 200 and answer["mask_source"] == "automatic", answer
    mask = np.asarray(Image.open(io.BytesIO(get(url, answer["urls"]["mask"])[1])))
    assert mask[40, 40] == 255 and mask[5, 5] == 0
