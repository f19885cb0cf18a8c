"""``ss3d-model serve``: a local web page that turns an uploaded photo into a coloured mesh.

Standard library server (``http.server``), page and WebGL viewer as package data under ``ss3d_model/web``.
Endpoints:

- ``GET /``: the page; ``GET /static/<name>``: its script and style sheet;
- ``POST /api/reconstruct``: ``multipart/form-data`` with ``image`` (the photo, required), ``mask`` (8-bit mask,
  255 = object, optional) and ``threshold`` (density level of the surface, optional) -> JSON
  ``{"id", "name", "vertices", "faces", "mask_source", "seconds", "urls": {"mask", "cutout", "turntable",
  "viewer", "glb", "obj", "ply"}}``. Any problem -> JSON ``{"error": one line, "hint": str | null}`` with
  status 400 (bad input), 411/413 (no length, too large) or 500 (a bug, logged as one line); the server keeps serving;
- ``GET /results/<id>/<name>``: the files of the last ``KEEP_RESULTS`` reconstructions, kept in memory.
  ``mesh.bin`` feeds the viewer: little-endian float32 positions [V, 3], float32 normals [V, 3], uint32 faces
  [F, 3], uint8 colours [V, 3], back to back (V and F are in the JSON answer).

Decoding and validating the uploads (size in pixels, grayscale, 16-bit, mask size) and the mask (the uploaded one,
else the photo's alpha, else an automatic one) are the CLI's own (:func:`ss3d_model.reconstruct.load_input`); one
reconstruction runs at a time (a lock around the network).
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from io import BytesIO
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from ss3d_data.clikit import console
from ss3d_data.errors import Ss3dError
from ss3d_model.config import ExtractConfig
from ss3d_model.network import ReconstructionNetwork
from ss3d_model.reconstruct import (
    IMAGE_SUFFIXES,
    PLAIN_CROP,
    InputCrop,
    inference_settings,
    input_settings,
    load_for_inference,
    load_input,
    override_grid,
    reconstruct_mesh,
    write_mesh,
    write_png,
)
from ss3d_model.turntable import turntable

MAX_UPLOAD_BYTES = 25 * 2**20  # a request body over this is refused before it is read
KEEP_RESULTS = 16               # reconstructions kept for download; older ones are forgotten
PREVIEW_PIXELS = 768            # longer side of the mask previews shown on the page
_DRAIN_BYTES = 512 * 2**20      # an oversized body up to this is read and discarded, so the browser sees the answer
_STATIC = {"app.js": "text/javascript", "viewer.js": "text/javascript", "style.css": "text/css"}
_MESH_TYPES = {"glb": "model/gltf-binary", "obj": "text/plain", "ply": "application/octet-stream"}


class RequestError(Ss3dError):
    """Bad request with its HTTP status."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> dict[str, Upload]:
    """A ``multipart/form-data`` body -> {field name: Upload(file name or "", bytes)}."""
    boundary = _header_params(content_type).get("boundary")
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise RequestError(400, "expected a multipart/form-data upload (the page's form, or curl -F image=@photo.png)")
    fields: dict[str, Upload] = {}
    for chunk in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise RequestError(400, "malformed multipart upload: a part has no header")
        headers = head.decode("utf-8", "replace").strip().split("\r\n")
        disposition = next((h.split(":", 1)[1] for h in headers if h.lower().startswith("content-disposition:")), "")
        params = _header_params(disposition)
        if "name" in params:
            fields[params["name"]] = Upload(params.get("filename", ""), data.removesuffix(b"\r\n"))
    return fields


def _header_params(value: str) -> dict[str, str]:
    """``type; key="value"; key2=value2`` -> {key: value} (keys lower-cased)."""
    return {key.lower(): quoted if quoted or not bare else bare
            for key, quoted, bare in re.findall(r';\s*([\w.-]+)\s*=\s*(?:"([^"]*)"|([^;\s]*))', value)}


def _safe_name(filename: str, fallback: str) -> str:
    """A file name for the temporary copy of an upload: its stem in ASCII (it also names the downloads, in an HTTP
    header) and its suffix when that is an image suffix, else ``.png`` (decoding goes by the bytes, not the name)."""
    base = Path(filename.replace("\\", "/").rsplit("/", 1)[-1])
    stem = re.sub(r"[^\w-]", "_", base.stem, flags=re.ASCII).strip("_")[:80] or fallback
    return stem + (base.suffix.lower() if base.suffix.lower() in IMAGE_SUFFIXES else ".png")


def _display_name(filename: str) -> str:
    """An upload's base name as the user knows it, for messages."""
    return "".join(c for c in filename.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())[:120]


def _png(image: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _preview(image: np.ndarray) -> np.ndarray:
    """``image`` shrunk so its longer side is at most PREVIEW_PIXELS."""
    scale = PREVIEW_PIXELS / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def viewer_mesh(mesh: trimesh.Trimesh) -> bytes:
    """The ``mesh.bin`` of the viewer: positions, normals (float32), faces (uint32), colours (uint8), no header."""
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3] if mesh.visual.kind == "vertex" else \
        np.full((len(mesh.vertices), 3), 200)
    return b"".join([np.asarray(mesh.vertices, "<f4").tobytes(), np.asarray(mesh.vertex_normals, "<f4").tobytes(),
                     np.asarray(mesh.faces, "<u4").tobytes(), np.asarray(colours, np.uint8).tobytes()])


@dataclass(frozen=True)
class Result:
    """One reconstruction: its files by name (``mask.png``, ``cutout.png``, ``turntable.png``, ``mesh.bin``,
    ``mesh.glb``, ``mesh.obj``, ``mesh.ply``) and what the page says about it."""

    files: dict[str, bytes]
    name: str         # stem of the downloads
    vertices: int
    faces: int
    mask_source: str  # "mask file", "alpha" or "automatic"


class Reconstructor:
    """A loaded network, its extraction settings and the input crop its checkpoint records; ``run`` turns uploads
    into a Result."""

    def __init__(self, network: ReconstructionNetwork, extract: ExtractConfig, mask_threshold: float,
                 threshold: float | None = None, crop: InputCrop = PLAIN_CROP) -> None:
        self.network, self.extract, self.mask_threshold, self.threshold = network, extract, mask_threshold, threshold
        self.crop = crop
        self.lock = threading.Lock()  # one reconstruction at a time: the network is the expensive shared part

    @property
    def default_threshold(self) -> float:
        return self.extract.density_threshold if self.threshold is None else self.threshold

    @classmethod
    def load(cls, checkpoint: Path, preset: str | None = None, threshold: float | None = None,
             compile: bool = False, resolution: int | None = None, coarse_resolution: int | None = None
             ) -> Reconstructor:
        network, meta, _ = load_for_inference(checkpoint, compile)
        extract, mask_threshold = inference_settings(meta, preset)
        extract = override_grid(extract, resolution, coarse_resolution)
        return cls(network, extract, mask_threshold, threshold, input_settings(meta))

    def run(self, image: Upload, mask: Upload | None, threshold: float | None = None) -> Result:
        """Uploads -> Result. Bad input raises RequestError (400) whose message names the uploaded files."""
        files_: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory(prefix="ss3d-serve-") as folder:
            root = Path(folder)
            image_path = root / "image" / _safe_name(image.filename, "image")
            mask_path = root / "mask" / _safe_name(mask.filename, "mask") if mask is not None else None
            for path, upload in ((image_path, image), (mask_path, mask)):
                if path is not None and upload is not None:
                    path.parent.mkdir()
                    path.write_bytes(upload.data)
            try:
                loaded = load_input(image_path, mask_path)
                rgb, msk = loaded.rgb, loaded.mask
                level = self.threshold if threshold is None else threshold
                with self.lock:
                    mesh = reconstruct_mesh(self.network, rgb, msk, self.extract, self.mask_threshold, level,
                                            self.crop)
                for suffix in _MESH_TYPES:  # the CLI's writers, so downloads equal `ss3d-model reconstruct` files
                    write_mesh(mesh, root / f"mesh.{suffix}")
                    files_[f"mesh.{suffix}"] = (root / f"mesh.{suffix}").read_bytes()
                write_png(turntable(mesh), root / "turntable.png")
                files_["turntable.png"] = (root / "turntable.png").read_bytes()
            except Ss3dError as err:
                message = str(err)  # it names the temporary copies: name the uploads instead
                for path, upload, what in ((image_path, image, "the photo"), (mask_path, mask, "the mask")):
                    if path is not None and upload is not None:
                        message = message.replace(str(path), _display_name(upload.filename) or what)
                raise RequestError(400, message.replace(f"{root}/", ""), err.hint) from None
        keep = msk >= round(self.mask_threshold * 255)
        files_["mask.png"] = _png(_preview(np.where(keep, 255, 0).astype(np.uint8)))
        files_["cutout.png"] = _png(_preview(np.dstack([rgb, np.where(keep, msk, 0).astype(np.uint8)])))
        files_["mesh.bin"] = viewer_mesh(mesh)
        return Result(files_, Path(image_path.name).stem, len(mesh.vertices), len(mesh.faces), loaded.mask_source)


class ResultStore:
    """The last ``keep`` results, by id (thread-safe)."""

    def __init__(self, keep: int = KEEP_RESULTS) -> None:
        self.keep = keep
        self._results: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, result: Result) -> str:
        key = secrets.token_hex(8)
        with self._lock:
            self._results[key] = result
            while len(self._results) > self.keep:
                self._results.popitem(last=False)
        return key

    def get(self, key: str) -> Result | None:
        with self._lock:
            return self._results.get(key)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], reconstructor: Reconstructor,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.reconstructor, self.max_upload_bytes, self.results = reconstructor, max_upload_bytes, ResultStore()
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "ss3d-serve"
    timeout = 120  # seconds a connection may stall (a client announcing more bytes than it sends)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per reconstruction or error instead of one per request

    def do_GET(self) -> None:
        try:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                page = (files("ss3d_model") / "web" / "index.html").read_text("utf-8")
                page = page.replace("__MAX_UPLOAD_BYTES__", str(self.server.max_upload_bytes))
                page = page.replace("__THRESHOLD__", f"{self.server.reconstructor.default_threshold:g}")
                self._send(200, page.encode(), "text/html; charset=utf-8")
            elif path.startswith("/static/") and path[8:] in _STATIC:
                self._send(200, (files("ss3d_model") / "web" / path[8:]).read_bytes(), _STATIC[path[8:]])
            elif match := re.fullmatch(r"/results/([0-9a-f]{16})/([\w.]+)", path):
                self._result(*match.groups())
            else:
                self._error(404, f"{path}: not found")
        except Exception as err:  # noqa: BLE001 - a bug: one line in the log, a message on the page, and keep serving
            self._internal_error(err)

    def _result(self, key: str, name: str) -> None:
        result = self.server.results.get(key)
        if result is None or name not in result.files:
            self._error(404, "this result is no longer kept; reconstruct the image again")
            return
        suffix = name.rsplit(".", 1)[-1]
        headers = {}
        if name.startswith("mesh.") and suffix in _MESH_TYPES:
            headers["Content-Disposition"] = f'attachment; filename="{result.name}.{suffix}"'
        kind = {"png": "image/png", "bin": "application/octet-stream"}.get(suffix) or _MESH_TYPES[suffix]
        self._send(200, result.files[name], kind, headers)

    def do_POST(self) -> None:
        try:
            if self.path.split("?", 1)[0] != "/api/reconstruct":
                self._error(404, f"{self.path}: not found")
                return
            fields = parse_multipart(self._body(), self.headers.get("Content-Type", ""))
            image = fields.get("image")
            if image is None or not image.data:
                raise RequestError(400, "no photo uploaded: choose an image file")
            mask = fields.get("mask")
            mask = mask if mask is not None and (mask.data or mask.filename) else None
            if mask is not None and not mask.data:
                raise RequestError(400, f"{mask.filename or 'mask'}: the mask file is empty (0 bytes)")
            start = time.perf_counter()
            result = self.server.reconstructor.run(image, mask, _threshold(fields.get("threshold")))
            seconds = time.perf_counter() - start
            key = self.server.results.add(result)
            urls = {name.split(".")[0 if name.endswith(".png") else 1]: f"/results/{key}/{name}"
                    for name in result.files}
            urls["viewer"] = urls.pop("bin")
            answer = {"id": key, "name": result.name, "vertices": result.vertices, "faces": result.faces,
                      "mask_source": result.mask_source, "seconds": round(seconds, 2), "urls": urls}
            console.print(f"reconstructed {image.filename or 'an upload'}: {result.faces} faces, {seconds:.2f} s",
                          markup=False, highlight=False)
            self._send(200, json.dumps(answer).encode(), "application/json")
        except Ss3dError as err:
            status = getattr(err, "status", 400)
            console.print(f"refused: {err}", markup=False, highlight=False, soft_wrap=True)
            self._error(status, str(err), err.hint)
        except Exception as err:  # noqa: BLE001 - a bug: logged as one line, the page gets a message
            self._internal_error(err)

    def _body(self) -> bytes:
        """The request body, refused (413) before it is read when it is over the cap."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise RequestError(411, "the upload has no Content-Length")
        size, cap = int(length), self.server.max_upload_bytes
        if size > cap:
            if size <= _DRAIN_BYTES:  # read and drop it in pieces, so the browser gets to read the answer
                while size > 0 and (piece := self.rfile.read(min(size, 2**20))):
                    size -= len(piece)
            self.close_connection = True
            raise RequestError(413, f"the upload is {int(length) / 2**20:.1f} MB, over the {cap / 2**20:g} MB limit",
                               "downscale the photo or save it as JPEG")
        return self.rfile.read(size)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the browser went away; nothing to tell it

    def _error(self, status: int, message: str, hint: str | None = None) -> None:
        self._send(status, json.dumps({"error": message, "hint": hint}).encode(), "application/json")

    def _internal_error(self, err: Exception) -> None:
        line = f"{err.__class__.__name__}: {err}".splitlines()[0] if str(err) else err.__class__.__name__
        console.print(f"[red]internal error[/red] on {self.command} {self.path}: {line}", soft_wrap=True,
                      highlight=False)
        self._error(500, f"internal error ({line})", "the server log has the details; it keeps serving")


def _threshold(field: Upload | None) -> float | None:
    text = field.data.decode("utf-8", "replace").strip() if field is not None else ""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise RequestError(400, f"threshold {text!r} is not a number") from None
    if not np.isfinite(value) or value <= 0:
        raise RequestError(400, f"threshold {text!r} must be a positive density level")
    return value


def make_server(reconstructor: Reconstructor, host: str = "127.0.0.1", port: int = 0,
                max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Server:
    """A server bound to ``host:port`` (port 0: any free port; see ``.url``), not yet serving."""
    try:
        return Server((host, port), reconstructor, max_upload_bytes)
    except OSError as err:
        raise Ss3dError(f"cannot listen on {host}:{port} ({err.strerror or err})",
                        hint="choose another --port, or --port 0 for any free one") from None


def serve(checkpoint: Path, host: str = "127.0.0.1", port: int = 8000, preset: str | None = None,
          threshold: float | None = None, compile: bool = False, resolution: int | None = None,
          coarse_resolution: int | None = None) -> None:
    """Load ``checkpoint``, print the page's URL and serve until Ctrl-C."""
    server = make_server(Reconstructor.load(checkpoint, preset, threshold, compile, resolution, coarse_resolution),
                         host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]listening on {host}: anyone who can reach this machine can use the page[/yellow]")
    console.print(f"ss3d is serving {checkpoint.name} on [bold]{server.url}[/bold] (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped serving")
    finally:
        server.server_close()
