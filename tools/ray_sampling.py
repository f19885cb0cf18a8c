"""How well S samples per ray render a thin part: uniform (stratified) against hierarchical sampling.

A slab |y| <= h of constant density sigma, crossed at right angles by rays over a preset's depth range
(``[volume] ray_half_depth``; the cpu preset's 0.9: 1.8 long), is rendered many times with fresh stratified
jitter. The closed form of its opacity is 1 - exp(-2 h sigma). Printed per thickness and scheme: the mean rendered
opacity (bias), its spread over rays (the noise a training step sees), and the share of rays that miss the slab
entirely (no sample lands in it: those rays give the field no gradient there at all). Hierarchical rows decode
S - K points without gradients first, then the same S with gradients as the uniform row does.

    .venv/bin/python tools/ray_sampling.py --preset cpu --importance 0,4,8,12 --half-thickness 0.025,0.05,0.1,0.2
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from types import SimpleNamespace

import torch

from ss3d_data import Ss3dError, load_preset
from ss3d_model.config import VolumeConfig
from ss3d_model.render import ray_bounds, render_rays

CAMERA_DISTANCE = 3.0  # the rays start this far before the slab along y


def slab(sigma: float, half_thickness: float) -> SimpleNamespace:
    """A field (``decode(z, points)``, as render_rays asks) of density ``sigma`` inside |y| <= half_thickness."""
    def decode(z, points):
        density = sigma * (points[..., 1].abs() <= half_thickness).float()
        return torch.where(density > 0, density, -1.0), torch.zeros(*points.shape[:-1], 3)
    return SimpleNamespace(decode=decode)


def measure(volume: VolumeConfig, half: float, sigma: float, rays: int, seed: int) -> dict[str, float]:
    """Render the slab along ``rays`` rays with ``volume``'s samples (and importance samples); the mean opacity,
    its spread over rays and the share of rays that see nothing of it."""
    field = slab(sigma, half)
    generator = torch.Generator().manual_seed(seed)
    # ray_bounds spans [d - half depth, d + half depth] around the origin's distance d from the centre. Each ray
    # starts beside the axis, at x where d = CAMERA_DISTANCE + u, u uniform in [0, 0.6): its window then runs
    # u further along y than the slab's centre, so the bin grid falls at a random phase against the slab.
    u = torch.rand(1, rays, 1, generator=generator) * 0.6
    lateral = ((CAMERA_DISTANCE + u) ** 2 - CAMERA_DISTANCE ** 2).sqrt()
    origins = torch.cat([lateral, torch.full_like(u, -CAMERA_DISTANCE), torch.zeros_like(u)], -1)
    directions = torch.tensor([0.0, 1.0, 0.0]).expand(1, rays, 3)
    near, far = ray_bounds(origins, volume)
    jitter = torch.rand(1, rays, volume.samples_per_ray, generator=generator)
    mask, _ = render_rays(field, torch.zeros(1, 1), origins, directions, near, far, volume.samples_per_ray,
                          last_interval=None, jitter=jitter, importance=volume.importance_samples)
    # A ray none of whose final samples is inside the slab renders as empty, with no gradient from the slab.
    return {"mean": mask.mean().item(), "spread": mask.std().item(), "missed": (mask < 1e-6).float().mean().item()}


def numbers(text: str, kind: type, flag: str) -> list:
    try:
        return [kind(x) for x in text.split(",")]
    except ValueError:
        raise Ss3dError(f"{flag} {text!r}: expected comma-separated numbers") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="the preset whose [volume] section sets rays and samples")
    parser.add_argument("--importance", default="0,4,8,12", help="comma-separated K values (0 = uniform)")
    parser.add_argument("--half-thickness", default="0.025,0.05,0.1,0.2")
    parser.add_argument("--opacity", type=float, default=0.95,
                        help="the slab's true opacity, in (0, 1); sigma follows from it per thickness")
    parser.add_argument("--dense", type=int, default=40,
                        help="also uniform at this many samples (40: every point the K = 8 row decodes at S = 24)")
    parser.add_argument("--rays", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        volume = VolumeConfig.from_preset(load_preset(args.preset))
        schemes = [replace(volume, importance_samples=k) for k in numbers(args.importance, int, "--importance")]
        if args.dense:
            schemes.append(replace(volume, samples_per_ray=args.dense, importance_samples=0))
        halves = numbers(args.half_thickness, float, "--half-thickness")
        if not 0 < args.opacity < 1 or args.rays < 1 or min(halves) <= 0:
            raise Ss3dError("--opacity must be in (0, 1), --rays and every --half-thickness positive")
    except Ss3dError as err:
        parser.error(str(err))
    print(f"S = {volume.samples_per_ray} samples over a {2 * volume.ray_half_depth:g}-long ray; true opacity "
          f"{args.opacity} for every thickness; {args.rays} rays each")
    print("| slab thickness | scheme | decoded points per ray (with grad + without) | mean opacity | spread | "
          "rays that miss it |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for half in halves:
        sigma = -math.log(1.0 - args.opacity) / (2.0 * half)
        for scheme in schemes:
            row = measure(scheme, half, sigma, args.rays, args.seed)
            s, k = scheme.samples_per_ray, scheme.importance_samples
            name = (f"hierarchical, K = {k}" if k else "uniform" if s == volume.samples_per_ray
                    else f"uniform, {s} samples")
            cost = f"{s} + {s - k}" if k else f"{s}"
            print(f"| {2 * half:.2f} | {name} | {cost} | {row['mean']:.3f} | {row['spread']:.3f} | "
                  f"{row['missed']:.3f} |")


if __name__ == "__main__":
    main()
