"""How hard a checkpoint's fields are: the peak density each test image's field reaches, and what one ray sample at
that density covers.

A field that is fog cannot make a thin part opaque: a ray sample at density sigma over the training's sample
spacing d (the preset's ray length over its samples, ``[volume]``) is opaque by 1 - exp(-sigma d). Per test image
(view 0 of a shard), the field is evaluated at every point of a dense grid over the extraction box (``--resolution``
cells a side; a grid's maximum is a lower bound of the field's), and the tool prints, per category and over all
images: the peak density (mean and median), the one-sample opacity at the peak, and the share of the box above the
preset's extraction level.

    .venv/bin/python tools/field_hardness.py --checkpoint runs/exp/lite-e1600-s0/pretrain.safetensors \\
        --shards shards/demo/shards/test
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ss3d_data import Ss3dError, load_preset
from ss3d_eval.predict import iter_test_items
from ss3d_model.config import VolumeConfig
from ss3d_model.extract import dense_grid
from ss3d_model.reconstruct import encode_input, inference_settings, input_settings, load_for_inference


@dataclass(frozen=True)
class Hardness:
    peak: float            # the largest density on the grid (after ReLU)
    opacity: float         # 1 - exp(-peak * spacing): one sample at the peak
    share_above: float     # share of grid points above the extraction level


def sample_spacing(volume: VolumeConfig) -> float:
    """The training's sample spacing along a ray: its length over its samples (the stratified bins' width)."""
    return 2.0 * volume.ray_half_depth / volume.samples_per_ray


@torch.inference_mode()
def hardness(network, z: torch.Tensor, resolution: int, box_half_size: float, spacing: float,
             level: float) -> Hardness:
    """One object's code z [1, code_dim] -> its field's :class:`Hardness` on a dense grid."""

    def density(points: torch.Tensor) -> torch.Tensor:
        sigma, _ = network.decode(z, points[None])
        return sigma[0, :, None].clamp_min(0.0)

    values = dense_grid(density, resolution, box_half_size)
    peak = float(values.max())
    return Hardness(peak, 1.0 - math.exp(-peak * spacing), float((values > level).float().mean()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--shards", required=True, help="test (or views) shards, a folder or glob; view 0 is the input")
    parser.add_argument("--preset", default="cpu", help="preset of the sample spacing and the extraction level")
    parser.add_argument("--resolution", type=int, default=32, help="grid cells a side over the extraction box")
    args = parser.parse_args()
    try:
        if args.resolution < 2:
            raise Ss3dError(f"--resolution must be at least 2, got {args.resolution}")
        preset = load_preset(args.preset)
        spacing = sample_spacing(VolumeConfig.from_preset(preset))
        network, meta, _ = load_for_inference(args.checkpoint)
        extract, mask_threshold = inference_settings(meta, args.preset)
        box = extract.grid(network.config.pixel_features > 0)[2]
        crop = input_settings(meta)
        rows: dict[str, list[Hardness]] = defaultdict(list)
        for item in iter_test_items(args.shards):
            with torch.inference_mode():
                z = encode_input(network, item.image, item.mask, mask_threshold, crop)
            rows[item.info.category].append(
                hardness(network, z, args.resolution, box, spacing, extract.density_threshold))
    except (Ss3dError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no test image in {args.shards}", file=sys.stderr)
        return 2
    print(f"sample spacing {spacing:.4f}, extraction level {extract.density_threshold:g}, grid {args.resolution}^3 "
          f"over half size {box:g}")
    print("| category | images | peak density, mean | median | one-sample opacity at the peak "
          "| share above the level |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    every = [h for values in rows.values() for h in values]
    for name, values in [*sorted(rows.items()), ("all", every)]:
        peaks = np.array([h.peak for h in values])
        print(f"| {name} | {len(values)} | {peaks.mean():.2f} | {np.median(peaks):.2f} | "
              f"{np.mean([h.opacity for h in values]):.3f} | {np.mean([h.share_above for h in values]):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
