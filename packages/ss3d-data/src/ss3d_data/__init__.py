"""ss3d-data: the data contracts of ss3d (shard samples, presets, atomic files, CLI conventions) and the tools that
turn meshes and image collections into training shards."""

from ss3d_data.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from ss3d_data.errors import Ss3dError
from ss3d_data.presets import Preset, available_presets, load_preset, section_config
from ss3d_data.schema import (
    SHARD_FORMAT,
    SHARD_VERSION,
    Sample,
    SampleInfo,
    ShardFormatError,
    decode_sample,
    encode_sample,
    make_key,
    read_sample_dir,
    write_sample_dir,
)
from ss3d_data.shards import SkipCounter, iter_samples, resolve_shards, select_shards, write_shards
from ss3d_data.sidecar import read_cameras, write_cameras

__all__ = [
    "SHARD_FORMAT",
    "SHARD_VERSION",
    "Preset",
    "Sample",
    "SampleInfo",
    "ShardFormatError",
    "SkipCounter",
    "Ss3dError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "available_presets",
    "decode_sample",
    "encode_sample",
    "iter_samples",
    "load_preset",
    "make_key",
    "resolve_shards",
    "section_config",
    "select_shards",
    "write_shards",
    "read_cameras",
    "read_sample_dir",
    "write_cameras",
    "write_sample_dir",
]
