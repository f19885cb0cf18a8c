"""The run folder of a training stage: options, ``config.json`` and the ``--resume`` check, metrics, checkpoints
with resumable state (optimiser and RNG state as safetensors, no pickle), the non-finite-loss guard and the
replicas' weight fingerprints.

Run folder ``<out>/``: ``config.json`` (preset JSON + CLI arguments), ``metrics.jsonl`` (one JSON object per logged
step), ``last.safetensors`` + ``last.state.safetensors`` (periodic), ``<name>.safetensors`` (final) and, when
TensorBoard is installed, ``tb/``. Only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ss3d_data.atomic import atomic_link, atomic_write_text
from ss3d_data.clikit import console
from ss3d_data.config import data_config
from ss3d_data.errors import Ss3dError
from ss3d_data.presets import Preset, load_preset
from ss3d_data.shards import SKIP_KINDS
from ss3d_model import CheckpointMeta, ReconstructionNetwork, load_state, save_network, save_state, state_path
from ss3d_train.data import ShardDataset, shard_record
from ss3d_train.distributed import World, all_min, all_sum_, broadcast_buffers
from ss3d_train.memory import plan_micro_batch
from ss3d_train.objectives import PRECISIONS


@dataclass
class RunOptions:
    """Options common to every stage (the CLI's shared flags)."""

    out: Path                        # run folder
    preset: str = "cpu"              # preset name or path
    name: str = ""                   # final checkpoint file stem; default: the stage name
    resume: bool = False             # continue from <out>/last.safetensors + its state file
    seed: int = 0                    # base seed of initialisation, data order and ray sampling
    workers: int = 0                 # DataLoader worker processes per rank
    device: str = "auto"             # auto | cpu | cuda
    stop_after: int = 0              # stop (with a checkpoint) after this many steps in this invocation; 0 = never
    max_nonfinite: int = 5           # consecutive non-finite losses tolerated before the run stops
    log_every: int = 1               # steps between metric lines
    epochs: int = 0                  # override of the preset's epoch count (0 = preset)
    max_bad: int = 10                # unreadable shard samples tolerated per epoch (all loaders of a rank together)
    micro_batch: int = 0             # objects rendered/decoded at a time, recomputed in backward (0 = whole batch)
    memory_budget_gb: float = 0.0    # pick the largest micro-batch whose estimated step fits this (0 = not used)
    precision: str = "fp32"          # fp32 | bf16 (autocast of the forward passes)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific CLI arguments, recorded in config.json

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


class NonFiniteGuard:
    """Counts steps skipped for a NaN/Inf loss; more than ``limit`` in a row stop the run with a clear message."""

    def __init__(self, limit: int) -> None:
        self.limit, self.skipped, self.in_a_row = limit, 0, 0

    def ok(self, finite: bool, step: int) -> bool:
        if finite:
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row > self.limit:
            raise Ss3dError(f"the loss was NaN/Inf for {self.in_a_row} steps in a row (at step {step}); stopping",
                            hint="lower the learning rate, check the input shards, or resume from an earlier "
                                 "checkpoint")
        return False


def finite_everywhere(world: World, loss: Tensor) -> bool:
    """True when the loss is finite on every rank (all ranks then skip or step together)."""
    return all_min(world, 1.0 if bool(torch.isfinite(loss.detach()).all()) else 0.0) > 0.5


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimiser's state as safetensors-ready tensors plus JSON (param groups, non-tensor entries)."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, Tensor],
                           info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for index, entry in info["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def rng_to_tensors(generator: torch.Generator) -> dict[str, Tensor]:
    tensors = {"rng.torch": torch.get_rng_state(), "rng.generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors


def rng_from_tensors(generator: torch.Generator, tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


def bad_summary(counts: Tensor) -> str:
    """``"3 (unreadable image 2, bad meta.json 1)"`` from counts by :data:`~ss3d_data.shards.SKIP_KINDS`."""
    parts = [f"{kind} {int(n)}" for kind, n in zip(SKIP_KINDS, counts.tolist()) if n]
    return f"{int(counts.sum())} ({', '.join(parts)})" if parts else "0"


def weights_fingerprint(network: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict (names, dtypes, bytes): equal only for bit-identical weights."""
    digest = hashlib.sha256()
    for name, value in sorted(network.state_dict().items()):
        digest.update(name.encode() + str(value.dtype).encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_replicas(world: World, network: torch.nn.Module) -> list[str]:
    """Fingerprints of the weights on every rank; an error when data-parallel replicas drifted apart."""
    mine = weights_fingerprint(network)
    if not world.distributed:
        return [mine]
    import torch.distributed as dist

    everyone: list[str] = [""] * world.size
    dist.all_gather_object(everyone, mine)
    if len(set(everyone)) != 1:
        raise Ss3dError(f"the {world.size} ranks ended with different weights; data-parallel training went wrong")
    return everyone


def inference_record(preset: Preset) -> dict[str, Any]:
    """What a checkpoint needs to be meshed as its run intended (read by ``ss3d_model.inference_settings``): the
    preset's ``[extract]`` section and mask threshold, so that a checkpoint of a ``.toml`` preset that is gone
    still meshes right."""
    return {"extract": preset.section("extract"), "mask_threshold": data_config(preset).mask_threshold}


class StageRun:
    """The run folder of one stage on one rank: config, metrics, checkpoints and resume state."""

    def __init__(self, stage: str, preset: Preset, options: RunOptions, world: World,
                 shards: dict[str, list[str]] | None = None) -> None:
        self.stage, self.preset, self.options, self.world = stage, preset, options, world
        self.out = Path(options.out)
        self.last = self.out / "last.safetensors"
        self.final = self.out / f"{options.name or stage}.safetensors"
        self.guard = NonFiniteGuard(options.max_nonfinite)
        self.steps_this_run = 0  # optimiser steps taken by this process (--stop-after counts these)
        self.metrics: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.writer = None
        # Resuming needs only the state file (it carries the weights too; it is written before last.safetensors).
        resumable = state_path(self.last)
        if options.resume and not resumable.is_file():
            raise Ss3dError(f"--resume: {resumable} does not exist", hint="start without --resume")
        if not options.resume and resumable.is_file():
            raise Ss3dError(f"{self.out} already holds a run ({resumable.name})",
                            hint="add --resume to continue it, or choose another --out")
        if options.precision not in PRECISIONS:
            raise Ss3dError(f"--precision {options.precision!r}: use one of {', '.join(PRECISIONS)}")
        # Before anything is written: a step that cannot fit is one line now, not an OOM kill minutes later.
        self.micro_batch, why = plan_micro_batch(stage, preset, options.micro_batch, options.memory_budget_gb,
                                                 world.device, options.precision)
        if why and world.is_main:
            console.print(f"[yellow]{why}[/yellow]")
        config = {"stage": stage, "preset": json.loads(preset.to_json()), "options": options.to_json(),
                  "world_size": world.size, "micro_batch": self.micro_batch,
                  "data": {group: shard_record(paths) for group, paths in (shards or {}).items()}}
        if options.resume:
            check_same_run(self.out / "config.json", config)
        if world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
            try:  # TensorBoard is optional
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.out / "tb"))
            except Exception:  # not installed (ImportError) or unusable
                self.writer = None

    def restore(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                generator: torch.Generator) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """When resuming, load ``last``'s weights, optimiser and generator state in place and return the state file's
        other tensors and its info (position, ...); else None."""
        if not self.options.resume:
            return None
        tensors, info = load_state(state_path(self.last))
        if info.get("stage") != self.stage:
            raise Ss3dError(f"{self.last} is a {info.get('stage')!r} run, not {self.stage!r}")
        # The state file carries its own copy of the weights, so a kill between the two writes cannot pair
        # weights of one step with the optimiser of another.
        try:
            network.load_state_dict({k.removeprefix("network."): v for k, v in tensors.items()
                                     if k.startswith("network.")})
        except RuntimeError:  # shapes of another architecture; config.json is normally checked before this
            raise Ss3dError(f"{state_path(self.last)} holds weights of another network architecture",
                            hint="resume with the preset the run was started with") from None
        tensors = {k: v for k, v in tensors.items() if not k.startswith("network.")}
        optimizer_from_tensors(optimizer, "optimizer", tensors, info["optimizer"])
        rng_from_tensors(generator, tensors)
        metrics = self.out / "metrics.jsonl"
        if metrics.is_file():
            lines = [json.loads(x) for x in metrics.read_text(encoding="utf-8").splitlines() if x.strip()]
            self.metrics = [m for m in lines if m.get("step", 0) <= info["position"]["step"]]
        self.guard.skipped = int(info.get("nonfinite_skipped", 0))
        return tensors, info

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.world.is_main:
            return
        record = {"step": step, "time_s": round(time.perf_counter() - self.started, 3), **values}
        self.metrics.append(record)
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{self.stage}/{key}", value, step)
        if step % max(1, self.options.log_every) == 0:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self.world.is_main:
            text = "".join(json.dumps(m, sort_keys=True) + "\n" for m in self.metrics)
            atomic_write_text(self.out / "metrics.jsonl", text)

    def meta(self, position: dict[str, Any], categories: list[str], manifest: str, encoder_init: str,
             parents: Any) -> CheckpointMeta:
        """Checkpoint metadata of this stage at ``position`` (the network's config is filled in by ``save``)."""
        return CheckpointMeta(model_config={}, stage=self.stage, preset=self.preset.name, step=position["step"],
                              epoch=position["epoch"], categories=categories, data_manifest_hash=manifest,
                              encoder_init=encoder_init, extra={"parents": parents, "world_size": self.world.size,
                                                                "nonfinite_skipped": self.guard.skipped,
                                                                **inference_record(self.preset)})

    def save(self, network: ReconstructionNetwork, optimizer: torch.optim.Optimizer, generator: torch.Generator,
             meta: CheckpointMeta, info: dict[str, Any], tensors: dict[str, Tensor] | None = None,
             final: bool = False) -> None:
        """Write ``last`` (weights + optimiser, generator and the stage's own ``info`` and extra ``tensors``) and,
        when ``final``, the stage's named checkpoint. Rank 0 only."""
        broadcast_buffers(self.world, network)
        if not self.world.is_main:
            return
        opt_tensors, opt_info = optimizer_to_tensors(optimizer, "optimizer")
        info = {**info, "optimizer": opt_info, "stage": self.stage, "nonfinite_skipped": self.guard.skipped}
        weights = {f"network.{k}": v for k, v in network.state_dict().items()}
        tensors = {**(tensors or {}), **opt_tensors, **rng_to_tensors(generator), **weights}
        save_state(state_path(self.last), tensors, info)
        save_network(self.last, network, meta)
        if final:  # the final checkpoint keeps its state too (self-training cameras live there)
            atomic_link(state_path(self.last), state_path(self.final))
            atomic_link(self.last, self.final)
        self.flush_metrics()

    def report_bad(self, datasets: list[ShardDataset | None]) -> None:
        """Unreadable samples skipped by this invocation (all ranks, all epochs): in the last metrics record and,
        when any were skipped, one console line."""
        counts = torch.zeros(len(SKIP_KINDS), dtype=torch.float64)
        for dataset in datasets:
            if dataset is not None:
                counts += dataset.bad_total.double()
        counts = all_sum_(self.world, counts.to(self.world.device)).cpu().long()
        if not self.world.is_main:
            return
        # Added to the last step's record rather than a record of its own: metrics.jsonl keeps one line per step.
        if self.metrics:
            self.metrics[-1].update(bad_samples=int(counts.sum()),
                                    bad_reasons={k: int(n) for k, n in zip(SKIP_KINDS, counts.tolist()) if n})
            self.flush_metrics()
        if counts.sum():
            console.print(f"[yellow]{self.stage}: skipped unreadable shard samples[/yellow] "
                          f"{bad_summary(counts)} (summed over epochs)")

    def finish(self, network: torch.nn.Module, *datasets: ShardDataset | None) -> None:
        """Report skipped samples, check that every rank holds the same weights and record their fingerprints
        (``replicas.json``)."""
        self.report_bad(list(datasets))
        broadcast_buffers(self.world, network)
        prints = verify_replicas(self.world, network)
        if self.world.is_main:
            atomic_write_text(self.out / "replicas.json", json.dumps({"world_size": self.world.size,
                                                                      "fingerprints": prints}, indent=2) + "\n")
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _differences(old: Any, new: Any, path: str, added: Any = None) -> list[str]:
    """Paths where ``new`` differs from ``old``, except keys ``old`` lacks that ``new`` holds at their value in
    ``added`` (the base preset's): options added to the preset format later, at their off value, so a run begun
    before the option existed still resumes."""
    if isinstance(old, dict) and isinstance(new, dict):
        added = added if isinstance(added, dict) else {}
        return [d for key in sorted(set(old) | set(new))
                if not (key not in old and key in added and new.get(key) == added[key])
                for d in _differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key),
                                      added.get(key))]
    return [] if old == new else [f"{path} {json.dumps(old)} -> {json.dumps(new)}"]


def check_same_run(config_path: Path, current: dict[str, Any]) -> None:
    """``--resume`` continues only the run recorded in ``config.json``: the same preset contents (whatever its name
    or path), seed and shards (names, index contents and sizes). Anything else would silently mix two runs."""
    try:
        recorded = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise Ss3dError(f"--resume: cannot read {config_path} ({getattr(err, 'strerror', None) or err}), so "
                        "cannot check that this command continues the same run") from None
    diffs = _differences(recorded.get("preset", {}).get("sections"), current["preset"]["sections"], "",
                         load_preset("paper").sections)
    diffs = [f"preset [{d.split('.', 1)[0]}] {d.split('.', 1)[1]}" if "." in d.split(" ", 1)[0] else f"preset {d}"
             for d in diffs]
    if recorded.get("options", {}).get("seed") != current["options"]["seed"]:
        diffs.append(f"seed {recorded.get('options', {}).get('seed')} -> {current['options']['seed']}")
    # --micro-batch may change (it does not change the maths); the precision does
    was, now = recorded.get("options", {}).get("precision", "fp32"), current["options"].get("precision", "fp32")
    if was != now:
        diffs.append(f"precision {was} -> {now}")
    for group, now in current["data"].items():
        before = recorded.get("data", {}).get(group)
        if before is None:
            continue  # a run folder from before shards were recorded
        if before["shards"] != now["shards"]:
            gone, new = sorted(set(before["shards"]) - set(now["shards"])), sorted(set(now["shards"]) -
                                                                                    set(before["shards"]))
            diffs.append(f"{group} shards" + (f" missing {', '.join(gone)}" if gone else "")
                         + (f" added {', '.join(new)}" if new else ""))
        elif before.get("manifest_hash") != now["manifest_hash"]:
            diffs.append(f"{group} shard index contents changed (shards re-written?)")
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise Ss3dError(f"--resume: this command differs from the run in {config_path.parent}: {shown}",
                        hint="resume with the run's own preset, seed and shards (see its config.json), or start "
                             "a new run in another --out")
