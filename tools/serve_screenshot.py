"""Screenshot of the `ss3d-model serve` page after a real upload, taken by headless Chromium.

Starts `ss3d-model serve` on a free port, opens the page in headless Chromium (Debian's `chromium`; WebGL through
SwiftShader, no GPU needed), puts the photo (and mask) into the page's file inputs, clicks Reconstruct, waits until
the page shows the mesh in its 3D viewer, the mask used and the turntable, and saves a PNG. Chromium is driven over
the DevTools protocol on a pipe (`--remote-debugging-pipe`): standard library only, no browser driver to install.

    .venv/bin/python tools/serve_screenshot.py --checkpoint runs/base/distill/distill.safetensors \
        --shard shards/demo/shards/test/test-chair-000000.tar --out docs/serve.png

`--shard` takes the first sample's `rgb000.png` and `mask000.png` from a webdataset test shard (`--key` picks
another sample); `--image` (and `--mask`) upload files of your own instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Browser:
    """Headless Chromium driven over the DevTools protocol on fds 3 (commands in) and 4 (answers out)."""

    def __init__(self, executable: str, profile: Path, width: int, height: int) -> None:
        to_chrome_read, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_write = os.pipe()
        os.set_inheritable(to_chrome_read, True)
        os.set_inheritable(from_chrome_write, True)

        def fds_3_and_4() -> None:  # in the child, before exec: the pipe ends Chromium expects
            os.dup2(to_chrome_read, 3)
            os.dup2(from_chrome_write, 4)

        flags = ["--headless=new", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run",
                 "--no-default-browser-check", "--disable-extensions", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", f"--window-size={width},{height}",
                 "--hide-scrollbars", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.insert(0, "--no-sandbox")  # Chromium refuses to sandbox as root
        # preexec_fn: this script has one thread, and nothing else puts a pipe on given fd numbers
        self.process = subprocess.Popen([executable, *flags], preexec_fn=fds_3_and_4, close_fds=False,  # noqa: PLW1509
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_read)
        os.close(from_chrome_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def call(self, method: str, timeout: float = 60.0, **params: object) -> dict:
        """Send one command (to the attached page, if any) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            self.events.append(answer)

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it start?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open_page(self) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for fd in (self._to_chrome, self._from_chrome):
            os.close(fd)


def start_server(checkpoint: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`ss3d-model serve --port 0` -> (process, the page's URL it printed)."""
    command = [sys.executable, "-m", "ss3d_model", "serve", "--checkpoint", str(checkpoint), "--port", "0", *extra]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    for line in server.stderr:
        sys.stderr.write(f"[serve] {line}")
        if found := re.search(r"http://[\d.]+:\d+/", line):
            return server, found.group(0)
    server.wait()
    raise SystemExit(f"ss3d-model serve exited ({server.returncode}) before printing its URL")


def from_shard(shard: Path, key: str | None, folder: Path) -> tuple[Path, Path]:
    """The rgb000.png and mask000.png of a webdataset sample (the first, or ``key``) -> two files in ``folder``."""
    with tarfile.open(shard) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        keys = sorted({name.split(".", 1)[0] for name in members if name.endswith(".rgb000.png")})
        if not keys:
            raise SystemExit(f"{shard}: no <key>.rgb000.png sample")
        key = key or keys[0]
        paths = []
        for kind in ("rgb000", "mask000"):
            member = members.get(f"{key}.{kind}.png")
            if member is None:
                raise SystemExit(f"{shard}: no {key}.{kind}.png (keys: {', '.join(keys)})")
            path = folder / f"{key}.{'photo' if kind == 'rgb000' else 'mask'}.png"
            path.write_bytes(tar.extractfile(member).read())
            paths.append(path)
    return paths[0], paths[1]


def default_checkpoint() -> Path | None:
    distilled = ROOT / "runs/base/distill/distill.safetensors"
    if distilled.is_file():
        return distilled
    found = sorted((ROOT / "runs").glob("**/*.safetensors")) if (ROOT / "runs").is_dir() else []
    return next((p for p in found if p.stem in ("distill", "pretrain") and ".state" not in p.name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=default_checkpoint(), help="checkpoint to serve")
    parser.add_argument("--image", type=Path, help="photo to upload")
    parser.add_argument("--mask", type=Path, help="mask to upload with it (optional)")
    parser.add_argument("--shard", type=Path, help="take the photo and mask from this webdataset shard instead")
    parser.add_argument("--key", help="sample of --shard (default: the first)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/serve.png", help="screenshot to write")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="Chromium executable")
    parser.add_argument("--size", default="1400x840", help="window size, WIDTHxHEIGHT")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the mesh")
    parser.add_argument("serve_args", nargs="*", help="more `ss3d-model serve` options, after --")
    args = parser.parse_args()
    if args.checkpoint is None:
        parser.error("no checkpoint under runs/; pass --checkpoint")
    if (args.image is None) == (args.shard is None):
        parser.error("pass --image (and optionally --mask) or --shard")
    width, height = (int(v) for v in args.size.split("x"))

    with tempfile.TemporaryDirectory(prefix="ss3d-screenshot-") as folder:
        image, mask = from_shard(args.shard, args.key, Path(folder)) if args.shard else (args.image, args.mask)
        server, url = start_server(args.checkpoint, args.serve_args)
        browser = Browser(args.chromium, Path(folder) / "profile", width, height)
        try:
            browser.open_page()
            browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                         mobile=False)
            browser.call("Page.navigate", url=url)
            browser.wait_for("document.readyState === 'complete' && !!document.getElementById('image')", 30,
                             "the page")
            webgl = browser.evaluate("(() => { const c = document.createElement('canvas'); "
                                     "return c.getContext('webgl2') ? 'webgl2' : c.getContext('webgl') ? 'webgl' : ''; "
                                     "})()")
            print(f"page {url} loaded; WebGL: {webgl or 'unavailable'}", file=sys.stderr)
            document = browser.call("DOM.getDocument")["root"]["nodeId"]
            uploads = [("#image", image)] + ([("#mask", mask)] if mask is not None else [])
            for selector, path in uploads:
                node = browser.call("DOM.querySelector", nodeId=document, selector=selector)["nodeId"]
                browser.call("DOM.setFileInputFiles", nodeId=node, files=[str(Path(path).resolve())])
            browser.click("#run")
            start = time.monotonic()
            state = browser.wait_for("['shown', 'error'].includes(document.body.dataset.state) && "
                                     "document.body.dataset.state", args.timeout, "the mesh")
            print(f"page state {state!r} after {time.monotonic() - start:.1f} s", file=sys.stderr)
            time.sleep(0.5)  # let the compositor put the last WebGL frame on screen
            shot = browser.call("Page.captureScreenshot", format="png")["data"]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_bytes(base64.b64decode(shot))
            print(f"wrote {args.out}", file=sys.stderr)
            if state != "shown":
                message = browser.evaluate("document.getElementById('error').innerText")
                raise SystemExit(f"the page shows an error: {message}")
        finally:
            browser.close()
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            for line in server.stderr:
                sys.stderr.write(f"[serve] {line}")


if __name__ == "__main__":
    main()
