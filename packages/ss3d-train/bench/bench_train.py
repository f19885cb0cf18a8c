"""Benchmark: training throughput of each stage's step at a preset's sizes (images/s and decoder points/s), the
fraction of the machine's fp32 matmul rate the decoder reaches, and self-training's cost per image relative to
pretraining. The matmul rate is measured in the same run (the machine may be shared: compare ratios).

Steps run on batches of the preset's shapes (random images; real look-at cameras), through the same functions the
stages use: ``_pretrain_loss``, the self-training camera and network updates, the distillation targets and loss.

    .venv/bin/python packages/ss3d-train/bench/bench_train.py [--preset cpu] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial

import torch

from ss3d_data.presets import load_preset, section_config
from ss3d_model import ModelConfig, MultiHypothesisCameras, ReconstructionNetwork, VolumeConfig, \
    intrinsics_matrix, look_at
from ss3d_train.distill import DistillConfig, distill_loss, sample_points
from ss3d_train.distributed import World
from ss3d_train.objectives import RenderObjective, ShapeObjective, render_training_rays
from ss3d_train.pretrain import PretrainConfig, _pretrain_loss
from ss3d_train.selftrain import SelftrainConfig, hypothesis_losses
from ss3d_train.sparse_adam import SparseRowAdam


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 3) -> float:
    a = torch.rand(n, n, device=device)
    best = math.inf
    for _ in range(repeats + 1):
        start = time.perf_counter()
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def decoder_flops_per_point(cfg: ModelConfig) -> int:
    """Multiply-adds x 2 of one decoder forward at one point (first layer, modulated layers, head)."""
    h = cfg.hidden
    return 2 * (3 * h + cfg.modulated_layers * h * h + 4 * h)


def timed(step, steps: int, device: torch.device) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def cameras_batch(n: int, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, 2, generator=generator)
    return look_at((u[:, 0] - 0.5) * 2.6, u[:, 1] * 2 * math.pi, torch.full((n,), 2.6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="preset whose sizes are used")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage (after one warm-up step)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    preset = load_preset(args.preset)
    model_cfg, volume = ModelConfig.from_preset(preset), VolumeConfig.from_preset(preset)
    sup = int(preset.section("data")["supervision_size"])
    g = torch.Generator().manual_seed(0)
    world = World(0, 1, 0, device)
    torch.manual_seed(0)
    network = ReconstructionNetwork(model_cfg).to(device).train()
    s = model_cfg.input_size
    reference = matmul_gflops(device)
    per_point = decoder_flops_per_point(model_cfg)
    print(f"preset {preset.name}, device {device}, threads {torch.get_num_threads()}; "
          f"fp32 matmul reference {reference:.1f} GFLOP/s; decoder {per_point} FLOP/point forward")
    rows = []

    # Pretraining: B inputs, K views, R rays, S samples; forward + backward + Adam.
    pre = section_config(PretrainConfig, preset.section("pretrain"), "pretrain")
    b, k = pre.batch_size, pre.supervision_views
    batch = {"input": torch.rand(b, 3, s, s), "rgb": torch.rand(b, k, sup, sup, 3),
             "mask": (torch.rand(b, k, sup, sup) > 0.5).float(),
             "intrinsics": intrinsics_matrix(sup * 1.9, sup).expand(b, k, 3, 3).clone(),
             "cam2world": cameras_batch(b * k, g).view(b, k, 4, 4)}
    objective = RenderObjective(network, volume.samples_per_ray)
    if pre.occupancy_weight > 0:  # the preset's 3D supervision: labelled points per instance
        batch["occupancy_points"] = torch.rand(b, pre.occupancy_points, 3, generator=g) - 0.5
        batch["occupancy_labels"] = (torch.rand(b, pre.occupancy_points, generator=g) > 0.5).float()
        objective = ShapeObjective(network, volume.samples_per_ray)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-6)

    def pretrain_step() -> None:
        loss, _ = _pretrain_loss(objective, batch, pre, volume, g, world, 2.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds = timed(pretrain_step, args.steps, device)
    points = b * k * pre.rays_per_view * volume.samples_per_ray
    if "occupancy_points" in batch:
        points += b * pre.occupancy_points
    rows.append(("pretrain", b / seconds, points / seconds, 3 * points * per_point / seconds, seconds / b))

    # Self-training (joint phase): camera updates + one probability update + one network update per step.
    st = section_config(SelftrainConfig, preset.section("selftrain"), "selftrain")
    b = st.batch_size
    cams = MultiHypothesisCameras(b, st.hypotheses, tuple(st.camera_distance_range), st.camera_focal_px, sup,
                                  generator=g).to(device)
    pose_opt, prob_opt = SparseRowAdam(cams.raw.data, st.lr_camera), SparseRowAdam(cams.logits.data, st.lr_camera)
    images, rgb, mask = torch.rand(b, 3, s, s), torch.rand(b, sup, sup, 3), (torch.rand(b, sup, sup) > 0.5).float()
    index = torch.arange(b)

    def selftrain_step() -> None:
        network.eval()
        with torch.no_grad():
            z = network.encode(images)
        network.train()
        render_encoded = partial(render_training_rays, network, z, volume.samples_per_ray)
        for _ in range(st.camera_steps_per_step):
            losses = hypothesis_losses(render_encoded, cams, index, rgb, mask, st, volume, g, detach_cameras=False)
            (grad,) = torch.autograd.grad(losses.mean(1).sum(), cams.raw)
            pose_opt.step(index, grad[index])
        (grad,) = torch.autograd.grad((cams.probabilities(index) * losses.detach()).sum(), cams.logits)
        prob_opt.step(index, grad[index])
        per_hyp = hypothesis_losses(partial(objective, images), cams, index, rgb, mask, st, volume, g,
                                    detach_cameras=True)
        loss = (cams.probabilities(index).detach() * per_hyp).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds = timed(selftrain_step, args.steps, device)
    points = b * st.hypotheses * st.rays_per_hypothesis * volume.samples_per_ray * (st.camera_steps_per_step + 1)
    rows.append(("selftrain", b / seconds, points / seconds, 3 * points * per_point / seconds, seconds / b))

    # Distillation: teacher forward (no grad) + student forward/backward at points_per_image points per image.
    di = section_config(DistillConfig, preset.section("distill"), "distill")
    b = di.batch_size
    teacher = ReconstructionNetwork(model_cfg).to(device).eval()
    images = torch.rand(b, 3, s, s)
    c2w, intr = cameras_batch(b, g), intrinsics_matrix(s * 1.9, s).expand(b, 3, 3)

    def distill_step() -> None:
        pts = sample_points(c2w, intr, s, di, volume, g)
        with torch.no_grad():
            t_sigma, t_rgb = teacher(images, pts)
        loss = distill_loss(*network(images, pts), t_sigma, t_rgb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds = timed(distill_step, args.steps, device)
    points = b * di.points_per_image
    rows.append(("distill", b / seconds, points / seconds, 4 * points * per_point / seconds, seconds / b))

    print(f"{'stage':<10} {'images/s':>9} {'decoder pts/s':>14} {'decoder GFLOP/s':>16} {'of matmul':>10}")
    for name, ips, pps, flops, _ in rows:
        print(f"{name:<10} {ips:9.2f} {pps:14,.0f} {flops / 1e9:16.2f} {flops / 1e9 / reference:9.1%}")
    print(f"selftrain cost per image relative to pretrain: {rows[1][4] / rows[0][4]:.2f}x")


if __name__ == "__main__":
    main()
