"""Benchmark of the ss3d model on this machine; prints figures, never asserts them.

    .venv/bin/python packages/ss3d-model/bench/bench_model.py [--preset paper] [--no-compile] [--threads 2]

Prints, in one run:
1. the fp32 matmul rate at the decoder's own shape ([points, H] @ [H, H]), the reference ceiling;
2. the decoder's forward and forward+backward points/s, eager and (optionally) torch.compile'd, with their
   fraction of that ceiling (a point costs 2 * (3H + L*H^2 + 4H) FLOPs forward);
3. ``reconstruct`` latency at the preset's ``[extract]`` resolution: encoder on one image, coarse-to-fine
   extraction, marching cubes and vertex colours, against dense extraction, with their ratio.

Step 3 needs a field with a realistic surface, which an untrained network does not have (its random SIREN field is
noise that crosses the threshold everywhere). So the network's decoder is evaluated on every point the extraction
asks for (the full cost is paid) while the surface is decided by an analytic two-blob density: the point counts are
those of a compact object, the timings are those of the real model.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from ss3d_data.presets import load_preset
from ss3d_model.config import ExtractConfig, ModelConfig
from ss3d_model.extract import coarse_to_fine_field, edge_interpolate, mesh_from_grid
from ss3d_model.network import ReconstructionNetwork


def best_time(fn, repeats: int = 3) -> float:
    fn()  # warm-up (allocations, compiled-graph selection)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def decoder_flops_per_point(config: ModelConfig) -> int:
    h = config.hidden
    return 2 * (3 * h + config.modulated_layers * h * h + 4 * h)


def matmul_rate(points: int, hidden: int) -> float:
    a, w = torch.randn(points, hidden), torch.randn(hidden, hidden)
    return 2 * points * hidden * hidden / best_time(lambda: a @ w, 5)


def decoder_rates(network: ReconstructionNetwork, batch: int, points: int) -> tuple[float, float]:
    z = torch.randn(batch, network.config.latent_dim) * 0.1
    p = torch.rand(batch, points, 3) - 0.5

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
    image = torch.rand(1, 3, size, size)
    counted = [0]

    def field(points: torch.Tensor) -> torch.Tensor:
        counted[0] += points.shape[0]
        _, logits = network.decode(z, points[None])          # the real cost; the analytic surface
        return torch.cat([blobs(points)[:, None], torch.sigmoid(logits[0])], -1)

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
    return time.perf_counter() - start, counted[0], len(mesh.faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper", help="preset for the model size and [extract] settings")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--points", type=int, default=20000, help="points per object in the decoder benchmark")
    parser.add_argument("--skip-dense", action="store_true", help="skip the (slow) dense extraction")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    config, extract = ModelConfig.from_preset(preset), ExtractConfig.from_preset(preset)
    network = ReconstructionNetwork(config).eval()
    print(f"preset {preset.name}: decoder {config.modulated_layers}x{config.hidden}, extraction "
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


if __name__ == "__main__":
    main()
