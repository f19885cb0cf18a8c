"""How much memory one training step needs, checked before the first step instead of ending in an OOM kill.

The decoder's activations dominate: every decoder point (a ray sample, or a distillation point) keeps tensors for
the backward pass. The decoder's training pass (``ss3d_model.network._LeanFilmSiren``) keeps one [H] product per
layer and point, ``(L + 1) * H`` floats, and rendering about 24 floats (densities, weights, colours):
``4 * ((L + 1) * H + 24)`` bytes, 6.2 KB at the paper's H = 256, L = 5 (plain autograd on the same formula kept
``2H + 3HL`` floats, 17.5 KB). The paper's pretraining step has 8 x 5 x 340 x 100 = 1.36M points.
``--micro-batch N`` (:func:`~ss3d_train.objectives.in_micro_batches`) keeps only one micro-batch's activations
alive, plus the pieces' inputs (a few floats per point). ``bench/bench_train.py --memory`` measures the real figures
next to these estimates (docs/benchmarks-train.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import Preset, section_config
from ss3d_model import ModelConfig, VolumeConfig

FLOAT = 4
# Activations of the ResNet trunk per input pixel in training (forward tensors kept for backward); a rough figure
# (ResNet-34 at 224 px: ~55 MB per image), small next to the decoder's at every preset.
ENCODER_BYTES_PER_PIXEL = {"resnet18": 700, "resnet34": 1100, "resnet50": 2800}
FIXED_BYTES = 3 << 29  # the interpreter, torch, weights, optimiser state, loader buffers: about 1.5 GB


def decoder_bytes_per_point(model: ModelConfig) -> int:
    """Activation bytes kept per decoder point for the backward pass in fp32 (see the module's docstring)."""
    return FLOAT * ((model.modulated_layers + 1) * model.hidden + 24)


def decoder_peak_bytes_per_point(model: ModelConfig, precision: str = "fp32") -> int:
    """:func:`decoder_bytes_per_point` plus the backward pass's transients (about five [H] tensors per point at the
    widest moment: gradients, a cosine, a recomputed layer input, a product, allocator slack);
    docs/benchmarks-train.md compares it with measured step peaks."""
    if precision == "bf16":  # autocast runs plain autograd: 2H + 3HL saved values per point, of 2 bytes each
        h = model.hidden
        return 2 * (2 * h + 3 * h * model.modulated_layers + 24) + 5 * FLOAT * h
    return decoder_bytes_per_point(model) + 5 * FLOAT * model.hidden


@dataclass(frozen=True)
class StepShape:
    """What one step of a stage puts through the network on one process."""

    objects: int          # images in the batch (the micro-batch splits these)
    decoder_points: int   # decoder points of the step's largest differentiated pass, all objects together


def step_shape(stage: str, preset: Preset) -> StepShape:
    from ss3d_train.distill import DistillConfig
    from ss3d_train.pretrain import PretrainConfig
    from ss3d_train.selftrain import SelftrainConfig

    samples = VolumeConfig.from_preset(preset).samples_per_ray
    if stage == "pretrain":
        cfg = section_config(PretrainConfig, preset.section("pretrain"), "pretrain")
        points = cfg.supervision_views * cfg.rays_per_view * samples
        points += cfg.occupancy_points if cfg.occupancy_weight > 0 else 0
        return StepShape(cfg.batch_size, cfg.batch_size * points)
    if stage == "selftrain":
        cfg = section_config(SelftrainConfig, preset.section("selftrain"), "selftrain")
        return StepShape(cfg.batch_size, cfg.batch_size * cfg.hypotheses * cfg.rays_per_hypothesis * samples)
    if stage == "distill":
        cfg = section_config(DistillConfig, preset.section("distill"), "distill")
        return StepShape(cfg.batch_size, cfg.batch_size * cfg.points_per_image)
    raise Ss3dError(f"unknown stage {stage!r}")


def step_bytes(stage: str, preset: Preset, micro_batch: int = 0, precision: str = "fp32") -> int:
    """Estimated peak memory of one training step of ``stage`` with ``micro_batch`` objects at a time (0 = all)."""
    model = ModelConfig.from_preset(preset)
    shape = step_shape(stage, preset)
    per_object = shape.decoder_points / shape.objects
    live = shape.objects if micro_batch <= 0 else min(micro_batch, shape.objects)
    # micro-batched: the pieces' inputs (sample offsets, ray ends) stay, about 2 floats per point
    kept = 0 if micro_batch <= 0 or micro_batch >= shape.objects else 2 * FLOAT * shape.decoder_points
    encoder = ENCODER_BYTES_PER_PIXEL.get(model.encoder_arch, 2800) * model.input_size ** 2 * shape.objects
    return int(FIXED_BYTES + encoder + kept + decoder_peak_bytes_per_point(model, precision) * per_object * live)


def available_bytes(device: torch.device) -> int:
    """Memory a step may use: free GPU memory on CUDA; on CPU the smaller of MemAvailable and the cgroup's limit."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    share = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)  # torchrun's ranks on this host share it
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path, encoding="ascii").read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            found.append(int(text))
    return (min(found) if found else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // share


def plan_micro_batch(stage: str, preset: Preset, micro_batch: int, budget_gb: float, device: torch.device,
                     precision: str = "fp32") -> tuple[int, str]:
    """The micro-batch a run uses, checked before its first step, and a line saying why when it was chosen here.

    ``micro_batch`` > 0 is used as given. Otherwise the whole batch is used when its estimated step fits the
    budget (``budget_gb`` if > 0, else what the device has), else the largest micro-batch that fits (the update is
    the same, so a run of the paper's preset on a smaller machine needs no flag). Raises one line, naming a
    micro-batch that would fit, when the step cannot fit."""
    shape = step_shape(stage, preset)
    # what the device has is shared with everything else on it: plan for 85% of it
    limit = int(budget_gb * 2**30) if budget_gb > 0 else int(0.85 * available_bytes(device))
    source = f"--memory-budget {budget_gb:g} GB" if budget_gb > 0 else f"85% of the {device.type} memory available"
    fits = [m for m in range(shape.objects, 0, -1) if step_bytes(stage, preset, m, precision) <= limit]
    whole = step_bytes(stage, preset, 0, precision)
    if micro_batch <= 0 and fits:
        if fits[0] == shape.objects:
            return 0, ""
        return fits[0], (f"{stage}: a step of batch {shape.objects} needs about {whole / 2**30:.1f} GB, more than "
                         f"{source} ({limit / 2**30:.1f} GB): rendering {fits[0]} image(s) at a time "
                         f"(--micro-batch {fits[0]}; the same update, about 1/3 more decoder compute)")
    need = step_bytes(stage, preset, micro_batch, precision)
    if need > limit:
        advice = (f"--micro-batch {fits[0]} would fit (same update, about 1/3 more decoder compute)" if fits else
                  "not even --micro-batch 1 fits: use a smaller preset or a machine with more memory")
        raise Ss3dError(f"{stage}: one step of preset {preset.name} needs about {need / 2**30:.1f} GB "
                        f"({shape.decoder_points:,} decoder points, batch {shape.objects}"
                        + (f", micro-batch {micro_batch}" if 0 < micro_batch < shape.objects else "")
                        + f"), more than {source} ({limit / 2**30:.1f} GB)", hint=advice)
    return micro_batch, ""
