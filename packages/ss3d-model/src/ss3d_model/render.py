"""NeRF-style volume rendering of the network's field along rays (the network is an argument, not a member).

For a ray with uniform samples t_1 < ... < t_S between near and far (unit directions, so t is a distance):
    delta_i = t_{i+1} - t_i (the last interval is 1e10: whatever lies beyond ``far`` is opaque-black),
    alpha_i = 1 - exp(-relu(sigma_i) * delta_i),  T_i = exp(-sum_{j<i} relu(sigma_j) * delta_j),  w_i = T_i alpha_i,
    mask = sum_i w_i  (the rendering of unit colour),  rgb = sum_i w_i * sigmoid(c_i)  (black background).
Example: a constant density s over a chord of length L gives mask = 1 - exp(-s L) up to the sampling step.

Hierarchical sampling (``importance`` K > 0, beyond the paper's uniform samples; NeRF's second pass, drawn from the
same network): S - K stratified samples are evaluated first without gradients, their weights w_i define a
piecewise-constant density along the ray, and K more depths are drawn from it by inverse transform; the ray is
then rendered through all S samples, sorted. The decoder evaluates S points with gradients, as uniform sampling
does, plus S - K without. Where a thin part stops a ray, the K samples land inside it, so the network can make
it opaque there instead of smearing density over the whole ray.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ss3d_model.cameras import pixel_rays
from ss3d_model.config import VolumeConfig

_LAST_INTERVAL = 1e10


def ray_bounds(origins: Tensor, volume: VolumeConfig) -> tuple[Tensor, Tensor]:
    """origins [..., R, 3] -> near, far [..., R]: camera distance -/+ ``ray_half_depth`` (near never below 0)."""
    distance = origins.norm(dim=-1)
    near = (distance - volume.ray_half_depth).clamp_min(0.0)
    return near, distance + volume.ray_half_depth


def sample_depths(near: Tensor, far: Tensor, samples: int, jitter: Tensor | None = None) -> Tensor:
    """near, far [B, R] -> t [B, R, S], uniform: deterministic with both ends included, or stratified with
    ``jitter`` [B, R, S] in [0, 1) (one sample at a random place inside each of S equal bins of [near, far])."""
    if jitter is None:
        steps = torch.linspace(0.0, 1.0, samples, dtype=near.dtype, device=near.device)
    else:
        steps = (torch.arange(samples, dtype=near.dtype, device=near.device) + jitter) / samples
    return near.unsqueeze(-1) + (far - near).unsqueeze(-1) * steps


def importance_depths(depths: Tensor, weights: Tensor, near: Tensor, far: Tensor, count: int,
                      jitter: Tensor | None = None) -> Tensor:
    """``count`` depths per ray drawn from the weights of samples at ``depths``: inverse transform of the
    piecewise-constant density that gives sample i's bin (from the midpoint before it to the one after it; the
    first and last bins reach ``near`` and ``far``) the share w_i / sum w. A ray with no weight draws uniformly.

    depths, weights [B, R, S]; near, far [B, R] -> t [B, R, count], ascending, no gradient. The draws are
    stratified: u = (i + jitter_i) / count with ``jitter`` [B, R, count] in [0, 1), or (i + 1/2) / count without.
    """
    with torch.no_grad():
        mids = 0.5 * (depths[..., 1:] + depths[..., :-1])
        edges = torch.cat([near.unsqueeze(-1), mids, far.unsqueeze(-1)], -1)                   # [B, R, S + 1]
        # The floor: rays through empty space have all-zero weights; they fall back to (nearly) uniform bins.
        pdf = weights + 1e-5 * (edges[..., 1:] - edges[..., :-1])
        cdf = torch.cumsum(pdf / pdf.sum(-1, keepdim=True), -1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)                            # [B, R, S + 1]
        offset = 0.5 if jitter is None else jitter
        u = (torch.arange(count, dtype=depths.dtype, device=depths.device) + offset) / count
        u = u.expand(*depths.shape[:-1], count).contiguous()
        above = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, depths.shape[-1])
        below = above - 1
        c0, c1 = cdf.gather(-1, below), cdf.gather(-1, above)
        e0, e1 = edges.gather(-1, below), edges.gather(-1, above)
        fraction = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
        return e0 + fraction * (e1 - e0)


def ray_weights(sigma_raw: Tensor, depths: Tensor, last_interval: float | None = _LAST_INTERVAL) -> Tensor:
    """sigma_raw, depths [B, R, S] -> w [B, R, S] = T_i alpha_i (``last_interval`` as in :func:`composite`)."""
    deltas = depths[..., 1:] - depths[..., :-1]
    last = deltas[..., -1:] if last_interval is None else torch.full_like(deltas[..., :1], last_interval)
    deltas = torch.cat([deltas, last], -1)
    optical = torch.relu(sigma_raw) * deltas                     # [B, R, S]
    alpha = 1.0 - torch.exp(-optical)
    # Exclusive cumulative sum (transmittance up to, not including, each sample), in log space for stability;
    # built by shifting rather than subtracting, since the last interval's 1e10 would swamp the float32 sum.
    accumulated = torch.cat([torch.zeros_like(optical[..., :1]), torch.cumsum(optical[..., :-1], -1)], -1)
    return alpha * torch.exp(-accumulated)


def composite(sigma_raw: Tensor, rgb_logits: Tensor, depths: Tensor, last_interval: float | None = _LAST_INTERVAL
              ) -> tuple[Tensor, Tensor, Tensor]:
    """sigma_raw [B, R, S], rgb_logits [B, R, S, 3], depths [B, R, S] -> mask [B, R], rgb [B, R, 3], w [B, R, S].

    ``last_interval``: length given to the last sample (1e10: opaque beyond ``far``); None uses the sampling step,
    which keeps a gradient at the last sample (d alpha / d sigma vanishes with a 1e10 interval).
    """
    weights = ray_weights(sigma_raw, depths, last_interval)
    mask = weights.sum(-1)
    rgb = (weights.unsqueeze(-1) * torch.sigmoid(rgb_logits)).sum(-2)
    return mask, rgb, weights


def render_rays(network, z: Tensor, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor,
                samples: int, last_interval: float | None = _LAST_INTERVAL, jitter: Tensor | None = None,
                importance: int = 0) -> tuple[Tensor, Tensor]:
    """Render rays of each object through ``network.decode``.

    network: a :class:`~ss3d_model.network.ReconstructionNetwork` (anything with ``decode(z, points)``);
    z [B, Z]; origins, directions [B, R, 3] (unit directions); near, far [B, R]; samples S per ray
    -> mask [B, R] in [0, 1], rgb [B, R, 3] (black background). One decoder call over B x (R*S) points.
    ``last_interval`` as in :func:`composite`; ``jitter`` [B, R, S] as in :func:`sample_depths` (stratified
    samples). ``importance`` K > 0: hierarchical sampling (the module's docstring), the first S - K offsets of
    ``jitter`` placing the first pass's samples and the last K the draws.
    """
    b, r, _ = origins.shape
    if importance:
        if not 0 < importance <= samples - 2:
            raise ValueError(f"importance samples must be in 1..{samples - 2} of {samples}, got {importance}")
        first = samples - importance
        coarse = sample_depths(near, far, first, None if jitter is None else jitter[..., :first])
        with torch.no_grad():
            probe = origins.unsqueeze(2) + directions.unsqueeze(2) * coarse.unsqueeze(-1)
            sigma_raw, _ = network.decode(z, probe.reshape(b, r * first, 3))
            weights = ray_weights(sigma_raw.view(b, r, first).float(), coarse, last_interval)
        drawn = importance_depths(coarse, weights.to(coarse.dtype), near, far, importance,
                                  None if jitter is None else jitter[..., first:])
        depths = torch.sort(torch.cat([coarse, drawn], -1), -1).values
    else:
        depths = sample_depths(near, far, samples, jitter)                                   # [B, R, S]
    points = origins.unsqueeze(2) + directions.unsqueeze(2) * depths.unsqueeze(-1)   # [B, R, S, 3]
    sigma_raw, rgb_logits = network.decode(z, points.reshape(b, r * samples, 3))
    mask, rgb, _ = composite(sigma_raw.view(b, r, samples), rgb_logits.view(b, r, samples, 3), depths,
                             last_interval)
    return mask, rgb


@torch.no_grad()
def render_image(network, z: Tensor, intrinsics: Tensor, cam2world: Tensor, size: int, volume: VolumeConfig,
                 samples: int | None = None, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Render whole images (no gradients), in chunks of rays.

    z [B, Z], intrinsics [B, 3, 3] or [3, 3], cam2world [B, 4, 4] -> mask [B, size, size], rgb [B, size, size, 3].
    ``chunk`` rays per decoder call (x samples points per object: small calls keep activations in cache).
    """
    b = z.shape[0]
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(1, -1, 2).to(z.dtype).to(z.device) + 0.5
    origins, directions = pixel_rays(intrinsics.expand(b, 3, 3), cam2world, pixels.expand(b, -1, 2))
    near, far = ray_bounds(origins, volume)
    steps = samples or volume.samples_per_ray
    masks, colours = [], []
    for start in range(0, size * size, chunk):
        part = slice(start, start + chunk)
        m, c = render_rays(network, z, origins[:, part], directions[:, part], near[:, part], far[:, part], steps,
                           importance=volume.importance_samples if samples is None else 0)
        masks.append(m)
        colours.append(c)
    return torch.cat(masks, 1).view(b, size, size), torch.cat(colours, 1).view(b, size, size, 3)
