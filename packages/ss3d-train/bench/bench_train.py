"""Benchmark: training throughput of each stage's step at a preset's sizes (images/s and decoder points/s), the
fraction of the machine's fp32 matmul rate the decoder reaches, and self-training's cost per image relative to
pretraining. The matmul rate is measured in the same run (the machine may be shared: compare ratios).

Steps run on batches of the preset's shapes (random images; real look-at cameras) through the stages' own step
functions (``pretrain_step``, ``selftrain_step`` in the joint phase, ``distill_step``), so the bench times the code
that trains.

    .venv/bin/python packages/ss3d-train/bench/bench_train.py [--preset cpu] [--steps 3] [--device cpu]
        [--micro-batch N] [--precision fp32|bf16]
    .venv/bin/python packages/ss3d-train/bench/bench_train.py --memory [--preset paper] [--micro 1,2]

``--memory`` runs each stage's steps in a fresh child process and prints the peak memory of a step (CPU: the
resident-set peak; CUDA: ``max_memory_allocated``) and the bytes per decoder point above the set-up's memory, with
the whole batch and with micro-batches, next to :mod:`ss3d_train.memory`'s estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from functools import partial

import torch

from ss3d_data.config import data_config, render_config
from ss3d_data.presets import load_preset, section_config
from ss3d_model import (
    ModelConfig,
    MultiHypothesisCameras,
    ReconstructionNetwork,
    VolumeConfig,
    intrinsics_matrix,
    look_at,
)
from ss3d_train.distill import DistillConfig, DistillState, distill_step
from ss3d_train.distributed import World
from ss3d_train.loop import new_position
from ss3d_train.memory import decoder_bytes_per_point, step_bytes, step_shape
from ss3d_train.objectives import FieldObjective, RenderObjective, ShapeObjective
from ss3d_train.pretrain import PretrainConfig, PretrainState, pretrain_step
from ss3d_train.run import NonFiniteGuard
from ss3d_train.selftrain import SelftrainConfig, SelftrainState, selftrain_step
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


def pretrain_setup(preset, network, device, g, micro_batch: int, precision: str):
    """Pretraining: B inputs, K views, R rays, S samples; forward + backward + Adam. -> (step, images, points)."""
    volume, model_cfg = VolumeConfig.from_preset(preset), network.config
    sup, s = data_config(preset).supervision_size, model_cfg.input_size
    pre = section_config(PretrainConfig, preset.section("pretrain"), "pretrain")
    b, k = pre.batch_size, pre.supervision_views
    batch = {"input": torch.rand(b, 3, s, s), "rgb": torch.rand(b, k, sup, sup, 3),
             "mask": (torch.rand(b, k, sup, sup) > 0.5).float(),
             "intrinsics": intrinsics_matrix(sup * 1.9, sup).expand(b, k, 3, 3).clone(),
             "cam2world": cameras_batch(b * k, g).view(b, k, 4, 4)}
    objective = RenderObjective(network, volume, micro_batch, precision)
    if pre.occupancy_weight > 0:  # the preset's 3D supervision: labelled points per instance
        batch["occupancy_points"] = torch.rand(b, pre.occupancy_points, 3, generator=g) - 0.5
        batch["occupancy_labels"] = (torch.rand(b, pre.occupancy_points, generator=g) > 0.5).float()
        objective = ShapeObjective(network, volume, micro_batch, precision)
    state = PretrainState(pre, volume, objective, torch.optim.Adam(network.parameters(), lr=1e-6), g,
                          World(0, 1, 0, device), NonFiniteGuard(0), 2.0)
    return partial(pretrain_step, state, batch), b, step_shape("pretrain", preset).decoder_points


def selftrain_setup(preset, network, device, g, micro_batch: int, precision: str):
    """Self-training (joint phase): camera updates + one probability update + one network update per step."""
    volume, s = VolumeConfig.from_preset(preset), network.config.input_size
    sup = data_config(preset).supervision_size
    st = section_config(SelftrainConfig, preset.section("selftrain"), "selftrain")
    b = st.batch_size
    cams = MultiHypothesisCameras(b, st.hypotheses, tuple(st.camera_distance_range), st.camera_focal_px, sup,
                                  generator=g).to(device)
    batch = {"index": torch.arange(b), "input": torch.rand(b, 3, s, s), "rgb": torch.rand(b, sup, sup, 3),
             "mask": (torch.rand(b, sup, sup) > 0.5).float()}
    renderer = RenderObjective(network, volume, micro_batch, precision)
    state = SelftrainState(st, volume, network, renderer, renderer, cams, SparseRowAdam(cams.raw.data, st.lr_camera),
                           SparseRowAdam(cams.logits.data, st.lr_camera),
                           torch.optim.Adam(network.parameters(), lr=1e-6), g, World(0, 1, 0, device),
                           NonFiniteGuard(0), new_position(epoch=st.camera_epochs))  # the joint phase
    # camera steps and the network step each differentiate the decoder at every point
    return (partial(selftrain_step, state, batch), b,
            step_shape("selftrain", preset).decoder_points * (st.camera_steps_per_step + 1))


def distill_setup(preset, network, device, g, micro_batch: int, precision: str):
    """Distillation: teacher forward (no grad) + student forward/backward at points_per_image points per image."""
    volume, s = VolumeConfig.from_preset(preset), network.config.input_size
    di = section_config(DistillConfig, preset.section("distill"), "distill")
    render = render_config(preset)
    b = di.batch_size
    teacher = ReconstructionNetwork(network.config).to(device).eval()
    batch = {"input": torch.rand(b, 3, s, s), "category": ["chair"] * b}
    state = DistillState(di, volume, {"chair": teacher}, FieldObjective(network, micro_batch, precision),
                         torch.optim.Adam(network.parameters(), lr=1e-6), g, World(0, 1, 0, device),
                         NonFiniteGuard(0), render.focal_px, render.image_size, list(render.distance_range), None)
    return partial(distill_step, state, batch), b, step_shape("distill", preset).decoder_points


STAGES = {"pretrain": pretrain_setup, "selftrain": selftrain_setup, "distill": distill_setup}
FLOPS_FACTOR = {"pretrain": 3, "selftrain": 3, "distill": 4}  # forward + backward (+ the teacher's forward)


def _preset(args: argparse.Namespace):
    preset = load_preset(args.preset)
    if args.batch:  # e.g. to measure the whole-batch figure of a preset whose batch does not fit this machine
        for stage in STAGES:
            preset.sections[stage]["batch_size"] = args.batch
    return preset


def _build(args: argparse.Namespace):
    device = torch.device(args.device)
    preset = _preset(args)
    torch.manual_seed(0)
    network = ReconstructionNetwork(ModelConfig.from_preset(preset)).to(device).train()
    return device, preset, network, torch.Generator().manual_seed(0)


def _rss_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the process started) of this process, from /proc."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(args: argparse.Namespace) -> None:
    """One stage's memory in a fresh process (a process's peak resident set cannot be reset): prints JSON."""
    device, preset, network, g = _build(args)
    step, _, _ = STAGES[args.child](preset, network, device, g, args.micro_batch, args.precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _rss_bytes("VmRSS")
    for _ in range(2):  # the first step allocates Adam's state, the second is a steady one
        step()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss_bytes("VmHWM")
    print(json.dumps({"base": base, "peak": peak}))


def memory_table(args: argparse.Namespace) -> None:
    """Peak memory per step and bytes per decoder point of each stage, whole batch vs micro-batches, measured in
    child processes, next to :mod:`ss3d_train.memory`'s estimates."""
    preset = _preset(args)
    model_cfg = ModelConfig.from_preset(preset)
    per_point = decoder_bytes_per_point(model_cfg)
    print(f"preset {preset.name}, device {args.device}; theoretical fp32 activations {per_point:,} bytes per "
          f"decoder point; {'resident-set peak' if args.device == 'cpu' else 'max_memory_allocated'} per step")
    print(f"{'stage':<10} {'micro':>5} {'points':>10} {'step peak GB':>13} {'estimate GB':>12} "
          f"{'bytes/point':>12}")
    for stage in args.stages.split(","):
        shape = step_shape(stage, preset)
        for micro in (0, *(int(m) for m in args.micro.split(",") if m)):
            if micro >= shape.objects:
                continue
            command = [sys.executable, __file__, "--child", stage, "--preset", args.preset, "--device", args.device,
                       "--micro-batch", str(micro), "--precision", args.precision, "--batch", str(args.batch)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{stage:<10} {micro:>5} {shape.decoder_points:>10,} failed: "
                      f"{(done.stderr.strip().splitlines() or ['killed'])[-1]}")
                continue
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            live = shape.decoder_points if micro == 0 else shape.decoder_points * micro / shape.objects
            print(f"{stage:<10} {micro or 'all':>5} {shape.decoder_points:>10,} {figures['peak'] / 2**30:13.2f} "
                  f"{step_bytes(stage, preset, micro, args.precision) / 2**30:12.2f} "
                  f"{(figures['peak'] - figures['base']) / live:12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="preset whose sizes are used")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage (after one warm-up step)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--micro-batch", type=int, default=0, help="objects per micro-batch (0 = whole batch)")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16")
    parser.add_argument("--batch", type=int, default=0, help="batch size of every stage (0 = the preset's)")
    parser.add_argument("--memory", action="store_true", help="print the memory table instead of the speed table")
    parser.add_argument("--stages", default="pretrain,selftrain,distill", help="stages of the memory table")
    parser.add_argument("--micro", default="1", help="micro-batches the memory table compares with the whole batch")
    parser.add_argument("--child", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.memory:
        return memory_table(args)
    device, preset, network, g = _build(args)
    reference = matmul_gflops(device)
    per_point = decoder_flops_per_point(network.config)
    print(f"preset {preset.name}, device {device}, threads {torch.get_num_threads()}, micro-batch "
          f"{args.micro_batch or 'none'}, {args.precision}; fp32 matmul reference {reference:.1f} GFLOP/s; "
          f"decoder {per_point} FLOP/point forward")
    rows = []
    for name, setup in STAGES.items():
        step, images, points = setup(preset, network, device, g, args.micro_batch, args.precision)
        seconds = timed(step, args.steps, device)
        rows.append((name, images / seconds, points / seconds, FLOPS_FACTOR[name] * points * per_point / seconds,
                     seconds / images))
    print(f"{'stage':<10} {'images/s':>9} {'decoder pts/s':>14} {'decoder GFLOP/s':>16} {'of matmul':>10}")
    for name, ips, pps, flops, _ in rows:
        print(f"{name:<10} {ips:9.2f} {pps:14,.0f} {flops / 1e9:16.2f} {flops / 1e9 / reference:9.1%}")
    print(f"selftrain cost per image relative to pretrain: {rows[1][4] / rows[0][4]:.2f}x")


if __name__ == "__main__":
    main()
