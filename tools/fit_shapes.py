"""Fit the pretraining shapes' occupancy alone, to tell where learning stalls: the decoder or the image encoder.

Reads views shards written with occupancy labels (`[data] occupancy_resolution` > 0) and trains a fresh network of
the preset's sizes on the occupancy BCE only (labels at the extraction level, as `[pretrain] occupancy_weight` does),
with the latent of each shape coming from one of:

- ``free``: a latent per shape, optimised directly (an auto-decoder: the decoder's capacity, no encoder);
- ``encoder``: the image encoder on a random view of the shape (what pretraining asks of the network);
- ``encoder-view``: the same, with the shape expressed in the input camera's yaw frame (no pose to infer).

``--decoder triplane`` swaps the FiLM-SIREN decoder for an experimental one (z -> three 32x32 feature planes by a
small conv generator -> a 2-layer MLP on the summed plane features); it is not part of ss3d-model.

Prints the BCE every 100 steps and, at the end, each training shape's IoU (its 32^3 solid at the extraction level
against its own label grid, no alignment; views 0 and 4 for the encoder modes). ``--score CHECKPOINT`` trains
nothing and scores a pretrained model the same way (its own extraction level; encoder mode).

    .venv/bin/python tools/fit_shapes.py --shards "shards/demo-occ/shards/train/synthetic-views-*.tar" \
        --mode free --steps 2000 --lr 1e-4 --latent-lr 1e-2
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ss3d_data.errors import Ss3dError
from ss3d_data.occupancy import Occupancy
from ss3d_data.preprocess import crop_to_mask
from ss3d_data.presets import load_preset
from ss3d_model.config import ExtractConfig, ModelConfig
from ss3d_model.network import ReconstructionNetwork
from ss3d_model.reconstruct import inference_settings, load_for_inference


class TriplaneDecoder(nn.Module):
    """(z [B, Z], points [B, N, 3]) -> raw [B, N, 4], like FilmSirenDecoder; features from three axis planes."""

    def __init__(self, latent_dim: int, channels: int = 16, hidden: int = 64, half_size: float = 0.6) -> None:
        super().__init__()
        self.channels, self.half_size = channels, half_size
        self.start = nn.Linear(latent_dim, 128 * 4 * 4)
        layers, width = [], 128
        for out in (96, 64, 48):  # 4 -> 8 -> 16 -> 32 pixels
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(width, out, 3, padding=1), nn.LeakyReLU(0.2)]
            width = out
        self.generator = nn.Sequential(*layers, nn.Conv2d(width, 3 * channels, 3, padding=1))
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 4))

    def forward(self, z: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        b, n, _ = points.shape
        planes = self.generator(self.start(z).view(b, 128, 4, 4))
        planes = planes.view(b * 3, self.channels, *planes.shape[-2:])
        p = (points / self.half_size).clamp(-1.2, 1.2)
        coords = torch.stack([p[..., [0, 1]], p[..., [0, 2]], p[..., [1, 2]]], 1).reshape(b * 3, 1, n, 2)
        features = F.grid_sample(planes, coords, align_corners=False).view(b, 3, self.channels, n).sum(1)
        return self.mlp(features.transpose(1, 2))


def yaw_frame(points: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Canonical points [B, N, 3] -> the frame turned about Z by -yaw [B] (the camera's azimuth becomes 0)."""
    c, s = torch.cos(-yaw)[:, None], torch.sin(-yaw)[:, None]
    x, y, z = points.unbind(-1)
    return torch.stack([c * x - s * y, s * x + c * y, z], -1)


def load_shapes(pattern: str, input_size: int) -> tuple[list[Occupancy], list[torch.Tensor], list[np.ndarray]]:
    """Each sample's label grid, its views as input tensors [V, 3, S, S] and its cameras' azimuths [V]."""
    grids, views, yaws = [], [], []
    for path in sorted(glob.glob(pattern)):
        with tarfile.open(path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        for name in sorted(files):
            if not name.endswith(".occupancy.json"):
                continue
            key = name.removesuffix(".occupancy.json")
            grids.append(Occupancy.from_json(files[name], name))
            inputs = []
            for v in range(len([f for f in files if f.startswith(f"{key}.rgb")])):
                rgb = np.asarray(Image.open(io.BytesIO(files[f"{key}.rgb{v:03d}.png"])).convert("RGB"))
                mask = np.asarray(Image.open(io.BytesIO(files[f"{key}.mask{v:03d}.png"])).convert("L"))
                image = crop_to_mask(rgb, mask, input_size).image
                inputs.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255.0)
            views.append(torch.stack(inputs))
            cam2world = np.asarray(json.loads(files[f"{key}.cameras.json"])["cam2world"])
            yaws.append(np.arctan2(cam2world[:, 1, 3], cam2world[:, 0, 3]))
    if not grids:
        raise Ss3dError(f"{pattern}: no sample with occupancy labels",
                        hint="write the views shards with a preset whose [data] occupancy_resolution is > 0")
    return grids, views, yaws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="views shards with occupancy labels (glob)")
    parser.add_argument("--mode", choices=("free", "encoder", "encoder-view"), default="free")
    parser.add_argument("--decoder", choices=("film-siren", "triplane"), default="film-siren")
    parser.add_argument("--preset", default="cpu", help="network sizes and the extraction level")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-4, help="decoder learning rate")
    parser.add_argument("--latent-lr", type=float, default=1e-4, help="free latents' or encoder's learning rate")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", help="a pretrained checkpoint to score on the shapes instead of training one")
    args = parser.parse_args()
    try:
        preset = load_preset(args.preset)
        config = ModelConfig.from_preset(preset)
        level = ExtractConfig.from_preset(preset).density_threshold
        if args.score:
            net, meta, _ = load_for_inference(Path(args.score))
            config, level = net.config, inference_settings(meta)[0].density_threshold
            args.mode, args.steps, args.decoder = "encoder", 0, "film-siren"
        grids, views, yaws = load_shapes(args.shards, config.input_size)
    except Ss3dError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    torch.manual_seed(args.seed)
    if not args.score:
        net = ReconstructionNetwork(config)
    if args.decoder == "triplane":
        net.decoder = TriplaneDecoder(config.latent_dim)
    with torch.no_grad():  # free latents start where an untrained encoder's outputs are
        latents = nn.Parameter(net.eval().encode(torch.stack([v[0] for v in views])).clone())
    net.train()
    second = [latents] if args.mode == "free" else list(net.encoder.parameters())
    optimizer = torch.optim.Adam([{"params": list(net.decoder.parameters()), "lr": args.lr},
                                  {"params": second, "lr": args.latent_lr}])
    rng = np.random.default_rng(args.seed)
    losses = []
    print(f"{len(grids)} shapes, mode {args.mode}, decoder {args.decoder}")
    for step in range(1, args.steps + 1):
        picked = rng.choice(len(grids), min(args.batch, len(grids)), replace=False)
        points, labels = zip(*[grids[i].sample(args.points, 0.5, rng) for i in picked])
        points, labels = torch.from_numpy(np.stack(points)), torch.from_numpy(np.stack(labels))
        if args.mode == "free":
            z = latents[picked]
        else:
            chosen = rng.integers(len(views[0]), size=len(picked))
            z = net.encode(torch.stack([views[i][v] for i, v in zip(picked, chosen)]))
            if args.mode == "encoder-view":
                points = yaw_frame(points, torch.tensor([yaws[i][v] for i, v in zip(picked, chosen)],
                                                        dtype=torch.float32))
        sigma, _ = net.decode(z, points)
        loss = F.binary_cross_entropy_with_logits(sigma - level, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0:
            print(f"step {step} BCE {np.mean(losses[-100:]):.4f}", flush=True)
    net.eval()
    centres = (torch.arange(32) + 0.5) / 32 - 0.5
    grid = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(1, -1, 3)
    ious = []
    with torch.no_grad():
        for i, occupancy in enumerate(grids):
            truth = occupancy.lookup(grid[0].numpy()).astype(bool)
            for v in ((0,) if args.mode == "free" else (0, len(views[i]) // 2)):
                z = latents[i:i + 1] if args.mode == "free" else net.encode(views[i][v:v + 1])
                query = yaw_frame(grid, torch.tensor([yaws[i][v]], dtype=torch.float32)) \
                    if args.mode == "encoder-view" else grid
                solid = (net.decode(z, query)[0][0] > level).numpy()
                ious.append((solid & truth).sum() / max((solid | truth).sum(), 1))
    print(f"training-shape IoU (32^3, no alignment): {np.mean(ious):.3f} over {len(ious)} shape views")
    return 0


if __name__ == "__main__":
    sys.exit(main())
