// A small WebGL viewer for vertex-coloured triangle meshes in ss3d's canonical frame (Z up, the default camera on -Y
// looking towards +Y): a headlight plus a key light, both sides of every face lit; drag to orbit, wheel to zoom,
// double-click to reset. Works with WebGL 2, or WebGL 1 with 32-bit indices (OES_element_index_uint).
"use strict";

function createViewer(canvas) {
  const options = { antialias: true, alpha: true, premultipliedAlpha: true };
  const gl = canvas.getContext("webgl2", options) || canvas.getContext("webgl", options);
  if (!gl) return null;
  const isWebGL2 = typeof WebGL2RenderingContext !== "undefined" && gl instanceof WebGL2RenderingContext;
  const uint32Indices = isWebGL2 || !!gl.getExtension("OES_element_index_uint");

  const vertexShader = `
    attribute vec3 position;
    attribute vec3 normal;
    attribute vec3 colour;
    uniform mat4 projection;
    uniform mat4 view;
    uniform mat3 rotation;
    varying vec3 vColour;
    varying vec3 vNormal;
    varying vec3 vPosition;
    void main() {
      vec4 p = view * vec4(position, 1.0);
      vPosition = p.xyz;
      vNormal = rotation * normal;
      vColour = colour;
      gl_Position = projection * p;
    }`;
  const fragmentShader = `
    precision mediump float;
    varying vec3 vColour;
    varying vec3 vNormal;
    varying vec3 vPosition;
    void main() {
      vec3 n = normalize(vNormal);
      vec3 toEye = normalize(-vPosition);
      if (dot(n, toEye) < 0.0) n = -n;  // light both sides: no black holes where a face points away
      float head = max(dot(n, toEye), 0.0);
      float key = max(dot(n, normalize(vec3(-0.5, 0.8, 0.6))), 0.0);
      gl_FragColor = vec4(vColour * (0.28 + 0.55 * head + 0.3 * key), 1.0);
    }`;

  function compile(type, source) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
    return shader;
  }
  const program = gl.createProgram();
  gl.attachShader(program, compile(gl.VERTEX_SHADER, vertexShader));
  gl.attachShader(program, compile(gl.FRAGMENT_SHADER, fragmentShader));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
  const attribute = {
    position: gl.getAttribLocation(program, "position"),
    normal: gl.getAttribLocation(program, "normal"),
    colour: gl.getAttribLocation(program, "colour"),
  };
  const uniform = {
    projection: gl.getUniformLocation(program, "projection"),
    view: gl.getUniformLocation(program, "view"),
    rotation: gl.getUniformLocation(program, "rotation"),
  };
  const buffers = { position: gl.createBuffer(), normal: gl.createBuffer(), colour: gl.createBuffer(),
                    index: gl.createBuffer() };

  const home = { azimuth: -0.6, elevation: 0.35 };
  const camera = { azimuth: home.azimuth, elevation: home.elevation, zoom: 1 };
  let mesh = null;  // {count, centre, radius}
  let pending = false;
  let onDrawn = null;

  // Column-major 4x4 matrices, as WebGL wants them.
  function perspective(fovy, aspect, near, far) {
    const f = 1 / Math.tan(fovy / 2);
    return new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) / (near - far), -1,
                             0, 0, (2 * far * near) / (near - far), 0]);
  }
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const unit = (a) => { const n = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / n, a[1] / n, a[2] / n]; };
  function lookAt(eye, target, up) {
    const z = unit(sub(eye, target));
    const x = unit(cross(up, z));
    const y = cross(z, x);
    return {
      view: new Float32Array([x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
                              -dot(x, eye), -dot(y, eye), -dot(z, eye), 1]),
      rotation: new Float32Array([x[0], y[0], z[0], x[1], y[1], z[1], x[2], y[2], z[2]]),
    };
  }

  function resize() {
    const scale = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * scale));
    const height = Math.max(1, Math.round(canvas.clientHeight * scale));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
  }

  function draw() {
    pending = false;
    resize();
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!mesh) return;
    const fovy = 0.7;
    const aspect = canvas.width / canvas.height;
    const fit = mesh.radius / Math.sin(Math.min(fovy, fovy * aspect) / 2);  // the bounding sphere fills the view
    const distance = 1.08 * fit * camera.zoom;
    const ce = Math.cos(camera.elevation);
    const c = mesh.centre;
    const eye = [c[0] + distance * ce * Math.sin(camera.azimuth), c[1] - distance * ce * Math.cos(camera.azimuth),
                 c[2] + distance * Math.sin(camera.elevation)];
    const { view, rotation } = lookAt(eye, c, [0, 0, 1]);
    gl.useProgram(program);
    gl.uniformMatrix4fv(uniform.projection, false,
                        perspective(fovy, aspect, Math.max(1e-3, distance - 2 * mesh.radius), distance + 2 * mesh.radius));
    gl.uniformMatrix4fv(uniform.view, false, view);
    gl.uniformMatrix3fv(uniform.rotation, false, rotation);
    gl.enable(gl.DEPTH_TEST);
    gl.drawElements(gl.TRIANGLES, mesh.count, gl.UNSIGNED_INT, 0);
    if (onDrawn) {
      const callback = onDrawn;
      onDrawn = null;
      callback();
    }
  }

  function redraw() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  }

  function attribute3(buffer, location, data, type, normalized) {
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
    gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
    gl.enableVertexAttribArray(location);
    gl.vertexAttribPointer(location, 3, type, normalized, 0, 0);
  }

  // The server's mesh.bin: float32 positions [V, 3], float32 normals [V, 3], uint32 faces [F, 3], uint8 colours
  // [V, 3], back to back, little-endian.
  function show(data, vertices, faces) {
    if (!uint32Indices) throw new Error("this browser's WebGL cannot draw large meshes; download the mesh instead");
    const expected = 24 * vertices + 12 * faces + 3 * vertices;
    if (data.byteLength !== expected) throw new Error(`mesh data is ${data.byteLength} bytes, expected ${expected}`);
    const positions = new Float32Array(data, 0, 3 * vertices);
    const normals = new Float32Array(data, 12 * vertices, 3 * vertices);
    const indices = new Uint32Array(data, 24 * vertices, 3 * faces);
    const colours = new Uint8Array(data, 24 * vertices + 12 * faces, 3 * vertices);
    const low = [Infinity, Infinity, Infinity];
    const high = [-Infinity, -Infinity, -Infinity];
    for (let i = 0; i < positions.length; i += 3) {
      for (let k = 0; k < 3; k++) {
        low[k] = Math.min(low[k], positions[i + k]);
        high[k] = Math.max(high[k], positions[i + k]);
      }
    }
    const centre = [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, (low[2] + high[2]) / 2];
    let radius = 1e-3;
    for (let i = 0; i < positions.length; i += 3) {
      radius = Math.max(radius, Math.hypot(positions[i] - centre[0], positions[i + 1] - centre[1],
                                           positions[i + 2] - centre[2]));
    }
    attribute3(buffers.position, attribute.position, positions, gl.FLOAT, false);
    attribute3(buffers.normal, attribute.normal, normals, gl.FLOAT, false);
    attribute3(buffers.colour, attribute.colour, colours, gl.UNSIGNED_BYTE, true);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, buffers.index);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, indices, gl.STATIC_DRAW);
    mesh = { count: 3 * faces, centre, radius };
  }

  // Drag to orbit (mouse, pen or one finger), wheel to zoom, double-click to reset.
  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    camera.azimuth -= (event.clientX - drag.x) * 0.01;
    camera.elevation = Math.max(-1.5, Math.min(1.5, camera.elevation + (event.clientY - drag.y) * 0.01));
    drag = { x: event.clientX, y: event.clientY };
    redraw();
  });
  const release = () => { drag = null; };
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    camera.zoom = Math.max(0.2, Math.min(5, camera.zoom * Math.exp(event.deltaY * 0.001)));
    redraw();
  }, { passive: false });
  canvas.addEventListener("dblclick", () => {
    Object.assign(camera, home, { zoom: 1 });
    redraw();
  });
  if (typeof ResizeObserver !== "undefined") new ResizeObserver(redraw).observe(canvas);
  else window.addEventListener("resize", redraw);

  return {
    // Fetch a mesh.bin and show it; resolves once it has been drawn.
    async load(url, vertices, faces) {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`mesh data: HTTP ${response.status}`);
      show(await response.arrayBuffer(), vertices, faces);
      Object.assign(camera, home, { zoom: 1 });
      return new Promise((resolve) => {
        onDrawn = resolve;
        redraw();
      });
    },
    clear() {
      mesh = null;
      redraw();
    },
  };
}
