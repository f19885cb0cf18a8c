"""How well S samples per ray render a thin part: uniform (stratified) against hierarchical sampling.

A slab |y| <= h of constant density sigma, crossed at right angles by rays over the cpu preset's depth range
(ray_half_depth 0.9: 1.8 long), is rendered many times with fresh stratified jitter. The closed form of its opacity is
1 - exp(-2 h sigma). Printed per thickness and scheme: the mean rendered opacity (bias), its spread over rays (the
noise a training step sees), and the share of rays that miss the slab entirely (no sample lands in it: those rays
give the field no gradient there at all). Hierarchical rows decode S - K points without gradients first, then the
same S with gradients as the uniform row does.

    .venv/bin/python tools/ray_sampling.py --samples 24 --importance 0,4,8,12 --half-thickness 0.025,0.05,0.1,0.2
"""

from __future__ import annotations

import argparse
import math
from types import SimpleNamespace

import torch

from ss3d_model.render import render_rays


def slab(sigma: float, half_thickness: float) -> SimpleNamespace:
    """A field (``decode(z, points)``, as render_rays asks) of density ``sigma`` inside |y| <= half_thickness."""
    def decode(z, points):
        density = sigma * (points[..., 1].abs() <= half_thickness).float()
        return torch.where(density > 0, density, -1.0), torch.zeros(*points.shape[:-1], 3)
    return SimpleNamespace(decode=decode)


def measure(samples: int, importance: int, half: float, sigma: float, rays: int, seed: int) -> dict[str, float]:
    field = slab(sigma, half)
    generator = torch.Generator().manual_seed(seed)
    # The slab sits at a random depth offset so that the bin grid does not line up with it.
    offset = (torch.rand(1, rays, 1, generator=generator) - 0.5) * 0.6
    origins = torch.cat([torch.zeros(1, rays, 1), -3.0 + offset, torch.zeros(1, rays, 1)], -1)
    directions = torch.tensor([0.0, 1.0, 0.0]).expand(1, rays, 3)
    near, far = torch.full((1, rays), 2.1) + offset[..., 0], torch.full((1, rays), 3.9) + offset[..., 0]
    jitter = torch.rand(1, rays, samples, generator=generator)
    mask, _ = render_rays(field, torch.zeros(1, 1), origins, directions, near, far, samples, last_interval=None,
                          jitter=jitter, importance=importance)
    # A ray none of whose final samples is inside the slab renders as empty, with no gradient from the slab.
    return {"mean": mask.mean().item(), "spread": mask.std().item(), "missed": (mask < 1e-6).float().mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--importance", default="0,4,8,12", help="comma-separated K values (0 = uniform)")
    parser.add_argument("--half-thickness", default="0.025,0.05,0.1,0.2")
    parser.add_argument("--opacity", type=float, default=0.95,
                        help="the slab's true opacity; sigma follows from it per thickness")
    parser.add_argument("--dense", type=int, default=40,
                        help="also uniform at this many samples (40: every point the K = 8 row decodes)")
    parser.add_argument("--rays", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ks = [int(k) for k in args.importance.split(",")]
    print(f"S = {args.samples} samples over a 1.8-long ray; true opacity {args.opacity} for every thickness; "
          f"{args.rays} rays each")
    print("| slab thickness | scheme | decoded points per ray (with grad + without) | mean opacity | spread | "
          "rays that miss it |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for half in [float(h) for h in args.half_thickness.split(",")]:
        sigma = -math.log(1.0 - args.opacity) / (2.0 * half)
        for k in ks:
            row = measure(args.samples, k, half, sigma, args.rays, args.seed)
            scheme = "uniform" if k == 0 else f"hierarchical, K = {k}"
            cost = f"{args.samples}" if k == 0 else f"{args.samples} + {args.samples - k}"
            print(f"| {2 * half:.2f} | {scheme} | {cost} | {row['mean']:.3f} | {row['spread']:.3f} | "
                  f"{row['missed']:.3f} |")
        if args.dense:
            row = measure(args.dense, 0, half, sigma, args.rays, args.seed)
            print(f"| {2 * half:.2f} | uniform, {args.dense} samples | {args.dense} | {row['mean']:.3f} | "
                  f"{row['spread']:.3f} | {row['missed']:.3f} |")


if __name__ == "__main__":
    main()
