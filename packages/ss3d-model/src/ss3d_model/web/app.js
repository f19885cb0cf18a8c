// The page: post the photo (and optional mask) to /api/reconstruct, then show the mask used, the mesh in the viewer,
// the turntable and the downloads. document.body.dataset.state is idle | working | error | shown (for scripts).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const maxUpload = Number(document.querySelector('meta[name="ss3d-max-upload"]').content);
  const megabytes = (bytes) => (bytes / 2 ** 20).toFixed(1);
  let viewer = null;
  try {
    viewer = createViewer($("viewer"));
  } catch (err) {
    console.error(err);
  }
  if (!viewer) $("viewer-note").textContent = "3D view unavailable (no WebGL here): see the turntable, or download the mesh";

  function setState(state) {
    document.body.dataset.state = state;
  }

  function showError(message, hint) {
    const box = $("error");
    box.textContent = message;
    if (hint) {
      const line = document.createElement("span");
      line.className = "hint";
      line.textContent = `hint: ${hint}`;
      box.appendChild(line);
    }
    box.hidden = false;
    setState("error");
  }

  function clearResult() {
    $("error").hidden = true;
    for (const id of ["mask-used", "cutout", "turntable"]) $(id).removeAttribute("src");
    for (const id of ["glb", "obj", "ply"]) {
      $(id).removeAttribute("href");
      $(id).classList.add("disabled");
    }
    $("mask-caption").textContent = "mask used";
    if (viewer) {
      viewer.clear();
      $("viewer-note").textContent = "the mesh appears here";
      $("viewer-note").hidden = false;
    }
  }

  $("image").addEventListener("change", () => {
    const file = $("image").files[0];
    const photo = $("photo");
    if (photo.src) URL.revokeObjectURL(photo.src);
    if (file) photo.src = URL.createObjectURL(file);
    else photo.removeAttribute("src");
    clearResult();
    setState("idle");
  });

  function loaded(img) {
    return img.complete && img.naturalWidth ? Promise.resolve() : new Promise((resolve) => {
      img.addEventListener("load", resolve, { once: true });
      img.addEventListener("error", resolve, { once: true });
    });
  }

  async function show(answer) {
    const urls = answer.urls;
    $("mask-used").src = urls.mask;
    $("mask-caption").textContent = `mask used (${answer.mask_source})`;
    $("cutout").src = urls.cutout;
    $("turntable").src = urls.turntable;
    for (const kind of ["glb", "obj", "ply"]) {
      const link = $(kind);
      link.href = urls[kind];
      link.download = `${answer.name}.${kind}`;
      link.classList.remove("disabled");
    }
    $("mesh-info").textContent = `${answer.faces.toLocaleString()} faces in ${answer.seconds} s; ` +
      "drag to orbit, wheel to zoom, double-click to reset";
    const pictures = ["mask-used", "cutout", "turntable"].map((id) => loaded($(id)));
    if (viewer) {
      $("viewer-note").textContent = "loading the mesh...";
      try {
        await viewer.load(urls.viewer, answer.vertices, answer.faces);
        $("viewer-note").hidden = true;
      } catch (err) {
        $("viewer-note").textContent = `3D view failed (${err.message}): see the turntable, or download the mesh`;
      }
    }
    await Promise.all(pictures);
    setState("shown");
  }

  async function reconstruct() {
    const image = $("image").files[0];
    const mask = $("mask").files[0];
    clearResult();
    if (!image) return showError("choose a photo first");
    const size = image.size + (mask ? mask.size : 0);
    if (size > maxUpload) {
      return showError(`the upload is ${megabytes(size)} MB, over the ${megabytes(maxUpload)} MB limit`,
                       "downscale the photo or save it as JPEG");
    }
    const body = new FormData();
    body.append("image", image, image.name);
    if (mask) body.append("mask", mask, mask.name);
    if ($("threshold").value.trim()) body.append("threshold", $("threshold").value.trim());
    setState("working");
    $("run").disabled = true;
    const started = Date.now();
    const tick = () => { $("status").textContent = `reconstructing... ${Math.round((Date.now() - started) / 1000)} s`; };
    tick();
    const timer = setInterval(tick, 1000);
    let answer;
    try {
      const response = await fetch("/api/reconstruct", { method: "POST", body });
      const text = await response.text();
      try {
        answer = JSON.parse(text);
      } catch (err) {
        answer = { error: `the server answered HTTP ${response.status} without a message` };
      }
      if (!response.ok && !answer.error) answer = { error: `the server answered HTTP ${response.status}` };
    } catch (err) {
      answer = { error: `no answer from the server (${err.message})`, hint: "is ss3d-model serve still running?" };
    } finally {
      clearInterval(timer);
      $("status").textContent = "";
      $("run").disabled = false;
    }
    if (answer.error) return showError(answer.error, answer.hint);
    await show(answer);
  }

  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    reconstruct();
  });
})();
