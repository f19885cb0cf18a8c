"""Benchmark of the ss3d model on this machine; prints figures, never asserts them.

    .venv/bin/python packages/ss3d-model/bench/bench_model.py [--preset paper] [--no-compile] [--threads 2]
        [--skip-official | --official-only] [--photos 2] [--device cpu|cuda] [--resolution 128]

Prints, in one run:
1. the fp32 matmul rate at the decoder's own shape ([points, H] @ [H, H]), the reference ceiling;
2. the decoder's forward and forward+backward points/s, eager and (optionally) torch.compile'd, with their
   fraction of that ceiling (a point costs 2 * (3H + L*H^2 + 4H) FLOPs forward);
3. ``reconstruct`` latency at the preset's ``[extract]`` resolution: encoder on one image, coarse-to-fine
   extraction, marching cubes and vertex colours, against dense extraction, with their ratio.

4. seconds per photo with the authors' released architecture imported through ``ss3d-model import-official``, at
   its recorded extraction (coarse-to-fine 128^3 from 32^3) and at the authors' dense grid (100^3 lattice points,
   ``--resolution 99 --coarse-resolution 99``): end to end through ``ss3d-model reconstruct`` (one process per photo,
   process start, imports and checkpoint loading included) and inside ``serve`` (model loaded once; each photo's
   request as the page sends it, mesh files and turntable included).

Step 3 needs a field with a realistic surface, which an untrained network does not have (its random SIREN field is
noise that crosses the threshold everywhere). So the network's decoder is evaluated on every point the extraction
asks for (the full cost is paid) while the surface is decided by an analytic two-blob density: the point counts are
those of a compact object, the timings are those of the real model.

Step 4 cannot use that trick (the command line reads a checkpoint), and the real release is never fetched: it
converts a file of random tensors laid out like the authors' (``random_release``): a low first-layer frequency for
a smooth field, and a density offset set so that 15% of the box is inside for a reference photo. Its surface is
still more ragged than an object's (it prints the faces), so the coarse-to-fine figures are an upper bound of a
real object's; dense extraction costs the same whatever the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ss3d_data.presets import load_preset
from ss3d_model.config import ExtractConfig, ModelConfig
from ss3d_model.extract import coarse_to_fine_field, dense_grid, edge_interpolate, mesh_from_grid
from ss3d_model.network import ReconstructionNetwork
from ss3d_model.official import (
    RELEASE_CROP_MARGIN_PX,
    RELEASE_MASK_THRESHOLD,
    convert_release,
    import_official,
    release_layout,
)
from ss3d_model.reconstruct import InputCrop, encode_input, override_grid
from ss3d_model.serve import Reconstructor, Upload

DEVICE = torch.device("cpu")  # --device; steps 1-3 run there (step 4, the release on a laptop, always on the CPU)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, repeats: int = 3) -> float:
    fn()  # warm-up (allocations, compiled-graph selection)
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return min(times)


def decoder_flops_per_point(config: ModelConfig) -> int:
    h = config.hidden
    return 2 * (3 * h + config.modulated_layers * h * h + 4 * h)


def matmul_rate(points: int, hidden: int) -> float:
    a, w = torch.randn(points, hidden, device=DEVICE), torch.randn(hidden, hidden, device=DEVICE)
    return 2 * points * hidden * hidden / best_time(lambda: a @ w, 5)


def decoder_rates(network: ReconstructionNetwork, batch: int, points: int) -> tuple[float, float]:
    z = torch.randn(batch, network.config.latent_dim, device=DEVICE) * 0.1
    p = torch.rand(batch, points, 3, device=DEVICE) - 0.5

    def forward():
        with torch.inference_mode():
            network.decode(z, p)

    def forward_backward():
        zz = z.clone().requires_grad_(True)
        sigma, rgb = network.decode(zz, p)
        (sigma.sum() + rgb.sum()).backward()

    n = batch * points
    return n / best_time(forward), n / best_time(forward_backward, 2)


def blobs(points: torch.Tensor) -> torch.Tensor:
    a = 10 * (0.35 - (points - torch.tensor([0.08, 0.0, -0.05])).norm(dim=-1))
    b = 10 * (0.18 - (points - torch.tensor([-0.28, 0.15, 0.25])).norm(dim=-1))
    return 3.0 + torch.maximum(a, b)


def reconstruct_latency(network: ReconstructionNetwork, extract: ExtractConfig, coarse: int) -> tuple[float, int, int]:
    """Seconds for image -> coloured mesh (the steps of ``extract_mesh``), decoder points evaluated, faces."""
    size = network.config.input_size
    image = torch.rand(1, 3, size, size, device=DEVICE)
    counted = [0]

    def field(points: torch.Tensor) -> torch.Tensor:
        counted[0] += points.shape[0]
        _, logits = network.decode(z, points.to(DEVICE)[None])  # the real cost; the analytic surface
        return torch.cat([blobs(points)[:, None], torch.sigmoid(logits[0]).cpu()], -1)

    start = time.perf_counter()
    with torch.inference_mode():
        z = network.encode(image)
        values, colours, _ = coarse_to_fine_field(field, extract.resolution, coarse, extract.density_threshold,
                                                  extract.box_half_size)
        mesh = mesh_from_grid(values, extract.density_threshold, extract.box_half_size)
        rgb, ok = edge_interpolate(colours, mesh.vertices, extract.box_half_size)
        missing = (~ok).nonzero()[:, 0]
        if len(missing):
            rgb[missing] = field(torch.from_numpy(np.asarray(mesh.vertices, np.float32))[missing])[:, 1:]
        mesh.visual.vertex_colors = (rgb.numpy() * 255).astype(np.uint8)
    _sync()
    return time.perf_counter() - start, counted[0], len(mesh.faces)


def random_release(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the layout of the authors' ``distilled_model.torch``, calibrated to a compact-ish field (see
    the module docstring): He-scaled convolutions, trained-looking batch-norm statistics, a unit-scale latent."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape, bound):
        return (torch.rand(shape, generator=g) * 2 - 1) * bound

    state = {}
    for name, (shape, dtype) in release_layout().items():
        if dtype == torch.int64:
            state[name] = torch.tensor(100_000)
        elif name.endswith("running_mean"):
            state[name] = 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=g)
        elif name.startswith("encoder.features") and len(shape) == 4:
            state[name] = torch.randn(shape, generator=g) * (2.0 / np.prod(shape[1:])) ** 0.5
        elif name.startswith("encoder.features"):
            state[name] = 0.5 + torch.rand(shape, generator=g) if name.endswith("weight") else \
                0.1 * torch.randn(shape, generator=g)
        elif name.startswith("encoder.fc"):
            state[name] = torch.randn(shape, generator=g) / shape[-1] ** 0.5 * (0.1 if "fc.3" in name else 1.0) \
                if name.endswith("weight") else 0.01 * torch.randn(shape, generator=g)
        elif name == "decoder.net.0.linear.weight":
            state[name] = uniform(shape, 0.02)   # sin(30 W p) with 30 |W| <= 0.6: about one wave over the box
        elif name == "decoder.net.6.weight":
            state[name] = uniform(shape, 0.5)
        elif name.endswith("weight"):
            state[name] = uniform(shape, (6 / shape[1]) ** 0.5 / 30)
        else:
            state[name] = uniform(shape, 0.1 if name == "decoder.net.0.linear.bias" else 0.02)
    state["decoder.net.6.bias"].zero_()
    network = convert_release(state)
    photo = bench_photos(1)[0]
    crop = InputCrop(RELEASE_CROP_MARGIN_PX, soft_mask=True)
    with torch.inference_mode():
        z = encode_input(network, np.ascontiguousarray(photo[..., :3]), np.ascontiguousarray(photo[..., 3]),
                         RELEASE_MASK_THRESHOLD, crop)
        density = dense_grid(lambda p: network.decode(z, p[None])[0][0], 32, 0.5)
    state["decoder.net.6.bias"][3] = 3.0 - torch.quantile(density.flatten(), 0.85).item()
    return state


def bench_photos(count: int) -> list[np.ndarray]:
    """RGBA photos (alpha = a soft elliptical mask) of 320 x 260 px, one object each, different per index."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:260, :320]
    photos = []
    for i in range(count):
        rgb = (rng.random((260, 320, 3)) * 80 + np.array([120, 90, 60]) * (1 + 0.2 * i)).clip(0, 255)
        distance = np.hypot((x - 160 - 10 * i) / (90 - 8 * i), (y - 130) / (60 + 10 * i))
        alpha = (np.clip((1.0 - distance) * 40 + 0.5, 0, 1) * 255).round()
        photos.append(np.dstack([rgb, alpha]).astype(np.uint8))
    return photos


def official_latency(threads: int, count: int) -> None:
    """Step 4: seconds per photo of an imported release, through ``reconstruct`` and inside ``serve``."""
    with tempfile.TemporaryDirectory(prefix="ss3d-bench-") as folder:
        root = Path(folder)
        torch.save(random_release(), root / "distilled_model.torch")
        start = time.perf_counter()
        import_official(root / "distilled_model.torch", root / "official.safetensors")
        print(f"import-official of a random file of the release's layout: {time.perf_counter() - start:.1f} s")
        photos = bench_photos(count)
        for i, photo in enumerate(photos):
            Image.fromarray(photo).save(root / f"photo{i}.png")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ss3d_model.reconstruct"], check=True, env=env)
        print(f"process start + imports alone: {time.perf_counter() - start:.1f} s")
        grids = (("coarse-to-fine 128^3 from 32^3 (recorded)", []),
                 ("dense 100^3 (the authors' demo)", ["--resolution", "99", "--coarse-resolution", "99"]))
        for label, flags in grids:
            times = []
            for i in range(count):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "ss3d_model", "reconstruct", "--checkpoint",
                                str(root / "official.safetensors"), "--image", str(root / f"photo{i}.png"), "--out",
                                str(root / f"mesh{i}.glb"), *flags], check=True, env=env, capture_output=True)
                times.append(time.perf_counter() - start)
            print(f"reconstruct (a process per photo), {label}: {np.mean(times):.1f} s/photo "
                  f"({', '.join(f'{t:.1f}' for t in times)})")
        start = time.perf_counter()
        served = Reconstructor.load(root / "official.safetensors")
        print(f"serve: checkpoint loaded once in {time.perf_counter() - start:.1f} s; decoder forward now "
              f"{extraction_rate(served.network) / 1e3:.0f}k points/s in 4096-point calls (the load gauge)")
        dense = override_grid(served.extract, 99, 99)
        for label, extract in ((grids[0][0], served.extract), (grids[1][0], dense)):
            times, faces = [], []
            for photo in photos:
                buffer = io.BytesIO()
                Image.fromarray(photo).save(buffer, format="PNG")
                start = time.perf_counter()
                result = Reconstructor(served.network, extract, served.mask_threshold, None, served.crop).run(
                    Upload("photo.png", buffer.getvalue()), None)
                times.append(time.perf_counter() - start)
                faces.append(result.faces)
            print(f"serve (model loaded once), {label}: {np.mean(times):.1f} s/photo "
                  f"({', '.join(f'{t:.1f}' for t in times)}; {', '.join(map(str, faces))} faces)")
        print(f"decoder forward at the end: {extraction_rate(served.network) / 1e3:.0f}k points/s; load average "
              f"{os.getloadavg()[0]:.1f}")


def extraction_rate(network: ReconstructionNetwork) -> float:
    """Decoder points/s in the calls extraction makes (4096 points, inference mode): reads the machine's load."""
    z = 0.1 * torch.randn(1, network.config.latent_dim)
    points = torch.rand(1, 4096, 3) - 0.5

    def calls():
        with torch.inference_mode():
            for _ in range(10):
                network.decode(z, points)

    return 10 * 4096 / best_time(calls, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper", help="preset for the model size and [extract] settings")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--points", type=int, default=20000, help="points per object in the decoder benchmark")
    parser.add_argument("--skip-dense", action="store_true", help="skip the (slow) dense extraction")
    parser.add_argument("--skip-official", action="store_true", help="skip step 4 (the imported release)")
    parser.add_argument("--official-only", action="store_true", help="run step 4 only")
    parser.add_argument("--photos", type=int, default=2, help="photos per figure in step 4")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where steps 1-3 run")
    parser.add_argument("--resolution", type=int, default=0,
                        help="extraction cells per axis in step 3 (0 = the preset's [extract] resolution)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.official_only:
        print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} (the machine is shared: figures move with the other users' load)")
        official_latency(args.threads, args.photos)
        return
    preset = load_preset(args.preset)
    config, extract = ModelConfig.from_preset(preset), ExtractConfig.from_preset(preset)
    if args.resolution:  # the coarse grid keeps the preset's ratio where it divides, else a quarter of the cells
        ratio = extract.resolution // extract.coarse_resolution
        coarse = args.resolution // ratio if args.resolution % ratio == 0 else args.resolution // 4
        extract = dataclasses.replace(extract, resolution=args.resolution, coarse_resolution=coarse)
    network = ReconstructionNetwork(config).to(DEVICE).eval()
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    print(f"device {where}; preset {preset.name}: decoder {config.modulated_layers}x{config.hidden}, extraction "
          f"{extract.resolution}^3 from {extract.coarse_resolution}^3; torch {torch.__version__}, "
          f"{args.threads} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(the machine is shared: figures move with the other users' load)")
    batch, flops = 8, decoder_flops_per_point(config)
    ceiling = matmul_rate(batch * args.points, config.hidden)
    print(f"fp32 matmul at the decoder's shape [{batch * args.points}, {config.hidden}] @ "
          f"[{config.hidden}, {config.hidden}]: {ceiling / 1e9:.1f} GFLOP/s "
          f"= {ceiling / flops / 1e3:.0f}k points/s at {flops / 1e6:.2f} MFLOP/point forward")
    rows = [("eager", *decoder_rates(network, batch, args.points))]
    if not args.no_compile:
        start = time.perf_counter()
        compiled = network.enable_compile()
        print(f"torch.compile: {'ok' if compiled else 'unavailable, eager kept'} "
              f"({time.perf_counter() - start:.1f} s incl. cache lookup)")
        if compiled:
            rows.append(("compiled", *decoder_rates(network, batch, args.points)))
    for name, fwd, fwd_bwd in rows:
        print(f"decoder {name:8s}: forward {fwd / 1e3:7.1f}k points/s ({fwd * flops / ceiling:5.1%} of matmul), "
              f"forward+backward {fwd_bwd / 1e3:6.1f}k points/s ({fwd_bwd * 3 * flops / ceiling:5.1%}, "
              f"counting backward as 2x forward)")
    for name in [row[0] for row in rows][::-1]:
        if name == "eager":
            network.disable_compile()
        # Best of two: the first call may still pay for compiling a variant (shapes, inference tensors).
        fine, fine_points, faces = min(reconstruct_latency(network, extract, extract.coarse_resolution)
                                       for _ in range(2))
        print(f"reconstruct ({name}) coarse-to-fine {extract.resolution}^3: {fine:.2f} s, "
              f"{fine_points / 1e3:.0f}k decoder points, {faces} faces")
        if not args.skip_dense:
            dense, dense_points, dense_faces = reconstruct_latency(network, extract, extract.resolution)
            print(f"reconstruct ({name}) dense          {extract.resolution}^3: {dense:.2f} s, "
                  f"{dense_points / 1e3:.0f}k decoder points, {dense_faces} faces; "
                  f"dense / coarse-to-fine = {dense / fine:.1f}x time, {dense_points / fine_points:.1f}x points")
            args.skip_dense = True  # once is enough: dense is the same work in both modes, just slower
    if not args.skip_official:
        network.disable_compile()
        official_latency(args.threads, args.photos)


if __name__ == "__main__":
    main()
