"""The checkpoint contract (format ``ss3d-checkpoint``, version 1). Normative text: ``docs/formats.md``.

A checkpoint is a safetensors file: the model's tensors (state-dict names) plus string metadata:
``ss3d.format``, ``ss3d.version`` and ``ss3d.meta`` (JSON of :class:`CheckpointMeta`). Resumable training state
(optimiser moments, scheduler, RNG, per-image cameras) lives in a sibling ``<name>.state.safetensors`` of format
``ss3d-train-state`` with the same layout. Both are written atomically; neither ever contains pickle.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ss3d_data.atomic import atomic_write_bytes
from ss3d_data.clikit import package_version
from ss3d_data.errors import Ss3dError

CHECKPOINT_FORMAT = "ss3d-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FORMAT = "ss3d-train-state"
STATE_VERSION = 1
STAGES = ("init", "pretrain", "selftrain", "distill")
_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8}


class CheckpointError(Ss3dError):
    """A checkpoint or state file is missing, malformed, truncated or of another format/version."""


@dataclass
class CheckpointMeta:
    model_config: dict[str, Any]              # the architecture; later stages rebuild the network from it
    stage: str                                # one of STAGES
    preset: str = ""                          # preset name the run used
    step: int = 0                             # optimiser steps taken in this stage
    epoch: int = 0                            # completed epochs in this stage
    categories: list[str] = field(default_factory=list)  # categories the weights were trained on (all stages)
    data_manifest_hash: str = ""              # hash of the shard index files the stage read
    code_version: str = ""                    # ss3d version (+ git commit when known)
    encoder_init: str = "random"              # "random" or "imagenet": how the encoder was initialised
    extra: dict[str, Any] = field(default_factory=dict)  # free-form: parent checkpoints, metrics, teachers, ...

    def validate(self, where: str) -> None:
        if self.stage not in STAGES:
            raise CheckpointError(f"{where}: stage must be one of {STAGES}, got {self.stage!r}")
        if not isinstance(self.model_config, dict):
            raise CheckpointError(f"{where}: model_config must be an object")


def code_version() -> str:
    """The ss3d version, plus the git commit of the source tree when it is a git checkout."""
    base = package_version("ss3d-model")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{base}+g{commit}" if commit else base


def _check_layout(path: Path, data: bytes) -> dict[str, Any]:
    """Validate the safetensors framing of ``data`` and return its header, with clear messages."""
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise CheckpointError(f"{path}: not a safetensors file, or truncated (header length {header_len} is "
                              f"impossible for a {len(data)}-byte file)")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not an object)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
            expected = _DTYPE_BYTES[entry["dtype"]]
            for dim in entry["shape"]:
                expected *= dim
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed safetensors entry {name!r}") from None
        if stop - start != expected:
            raise CheckpointError(f"{path}: tensor {name!r} has a size that does not match its shape")
        end = max(end, stop)
    available = len(data) - 8 - header_len
    if end > available:
        raise CheckpointError(f"{path}: truncated ({available} of {end} data bytes present); the write was "
                              "interrupted or the copy is incomplete")
    return header


def _read(path: str | os.PathLike[str], fmt: str, version: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file")
    data = p.read_bytes()
    header = _check_layout(p, data)
    metadata = header.get("__metadata__") or {}
    if metadata.get("ss3d.format") != fmt:
        found = metadata.get("ss3d.format", "no ss3d format tag")
        raise CheckpointError(f"{p}: not an {fmt} file ({found})")
    if metadata.get("ss3d.version") != str(version):
        raise CheckpointError(
            f"{p}: {fmt} version {metadata.get('ss3d.version')!r}; this ss3d reads version {version}",
            hint="convert it with the ss3d release that wrote it, or re-train",
        )
    try:
        tensors = st_load(data)
    except Exception as err:  # safetensors raises its own error type
        raise CheckpointError(f"{p}: unreadable safetensors data ({err})") from None
    return tensors, metadata


def _write(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(contiguous, metadata=metadata))


def save_checkpoint(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: CheckpointMeta) -> None:
    """Write model tensors and metadata atomically as an ``ss3d-checkpoint``."""
    meta.validate(str(path))
    if not meta.code_version:
        meta.code_version = code_version()
    _write(path, tensors, {"ss3d.format": CHECKPOINT_FORMAT, "ss3d.version": str(CHECKPOINT_VERSION),
                           "ss3d.meta": json.dumps(asdict(meta), sort_keys=True)})


def _parse_meta(path: str | os.PathLike[str], metadata: dict[str, str]) -> CheckpointMeta:
    try:
        raw = json.loads(metadata["ss3d.meta"])
        meta = CheckpointMeta(**raw)
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: checkpoint metadata is malformed ({err})") from None
    meta.validate(str(path))
    return meta


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Read and validate an ``ss3d-checkpoint``: (tensors, metadata)."""
    tensors, metadata = _read(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
    return tensors, _parse_meta(path, metadata)


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """The metadata of a checkpoint (the whole file is validated)."""
    return load_checkpoint(path)[1]


def state_path(checkpoint: str | os.PathLike[str]) -> Path:
    """The sibling training-state file of a checkpoint: ``x.safetensors`` -> ``x.state.safetensors``."""
    p = Path(checkpoint)
    return p.with_name(p.name.removesuffix(".safetensors") + ".state.safetensors")


def save_state(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write resumable training state (tensors plus a JSON object) atomically as ``ss3d-train-state``."""
    _write(path, tensors, {"ss3d.format": STATE_FORMAT, "ss3d.version": str(STATE_VERSION),
                           "ss3d.state": json.dumps(info, sort_keys=True)})


def load_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an ``ss3d-train-state`` file: (tensors, info)."""
    tensors, metadata = _read(path, STATE_FORMAT, STATE_VERSION)
    try:
        return tensors, json.loads(metadata["ss3d.state"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: training state metadata is malformed ({err})") from None
