"""Named presets: the sizes and counts of every stage, as data.

A preset is a TOML file in ``ss3d_data/presets/`` (or any path). ``paper.toml`` holds every key with the paper's
values; other presets name a base with ``[preset] inherit = "paper"`` and override values only: a key the base does
not have is an error, so a typo cannot silently fall back to a default. A preset changes sizes, never the algorithm.

Each package turns its section into a typed dataclass with :func:`section_config`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ss3d_data.errors import Ss3dError

T = TypeVar("T")


@dataclass(frozen=True)
class Preset:
    name: str
    sections: dict[str, dict[str, Any]]

    def section(self, name: str) -> dict[str, Any]:
        if name not in self.sections:
            raise Ss3dError(f"preset {self.name!r} has no section [{name}]")
        return copy.deepcopy(self.sections[name])

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "sections": self.sections}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preset":
        data = json.loads(text)
        return cls(name=data["name"], sections=data["sections"])


def available_presets() -> list[str]:
    folder = resources.files("ss3d_data") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_toml(name_or_path: str) -> tuple[str, dict[str, Any]]:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text, name = path.read_text(encoding="utf-8"), path.stem
    else:
        resource = resources.files("ss3d_data") / "presets" / f"{name_or_path}.toml"
        if not resource.is_file():
            raise Ss3dError(
                f"unknown preset {name_or_path!r}",
                hint=f"available presets: {', '.join(available_presets())}, or a path to a .toml file",
            )
        text, name = resource.read_text(encoding="utf-8"), name_or_path
    try:
        return name, tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise Ss3dError(f"preset {name_or_path!r} is not valid TOML: {err}") from None


def _override(base: dict[str, Any], child: dict[str, Any], where: str) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in child.items():
        if key not in base:
            raise Ss3dError(f"preset key {where}{key} does not exist in its base preset")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise Ss3dError(f"preset key {where}{key} must be a table")
            merged[key] = _override(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def load_preset(name_or_path: str) -> Preset:
    """Load a preset by name (``paper``, ``cpu``, ``tiny``) or by path, resolving ``inherit`` chains."""
    seen: list[str] = []
    chain: list[tuple[str, dict[str, Any]]] = []
    current = name_or_path
    while True:
        if current in seen:
            raise Ss3dError(f"preset inheritance loop: {' -> '.join([*seen, current])}")
        seen.append(current)
        name, data = _read_toml(current)
        chain.append((name, data))
        parent = data.get("preset", {}).get("inherit")
        if not parent:
            break
        current = parent
    name, merged = chain[-1]
    merged.setdefault("preset", {})
    for child_name, child in reversed(chain[:-1]):
        child = copy.deepcopy(child)
        meta = child.pop("preset", {})
        merged = _override(merged, child, "")
        merged["preset"] = {**merged["preset"], **{k: v for k, v in meta.items() if k != "inherit"}}
        name = child_name
    merged["preset"].pop("inherit", None)
    return Preset(name=name, sections=merged)


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise Ss3dError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return origin(_check_type(v, inner, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check_type(value, option, where)
            except Ss3dError:
                continue
        raise Ss3dError(f"{where} has the wrong type: {value!r}")
    if annotation is Any or origin is not None:
        return value
    if annotation is type(None):
        if value is not None:
            raise Ss3dError(f"{where} must be empty")
        return value
    if isinstance(annotation, type) and not isinstance(value, annotation) or (
        annotation is int and isinstance(value, bool)
    ):
        raise Ss3dError(f"{where} must be of type {annotation.__name__}, got {value!r}")
    return value


def section_config(cls: type[T], values: dict[str, Any], section: str) -> T:
    """Build dataclass ``cls`` from a preset section: every field required, unknown keys rejected, types checked."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise Ss3dError(f"[{section}] has unknown keys: {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name not in values:
            if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
                continue
            raise Ss3dError(f"[{section}] is missing key {name!r}")
        kwargs[name] = _check_type(values[name], hints[name], f"[{section}] {name}")
    return cls(**kwargs)


def check_values(section: str, config: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                 fractions: tuple[str, ...] = ()) -> None:
    """One-line error naming every out-of-range value of a typed section: ``positive`` fields must be > 0,
    ``non_negative`` >= 0, ``fractions`` in [0, 1] (meant for a config dataclass's ``__post_init__``)."""
    bad = [f"{name} must be > 0" for name in positive if not getattr(config, name) > 0]
    bad += [f"{name} must be >= 0" for name in non_negative if not getattr(config, name) >= 0]
    bad += [f"{name} must be in [0, 1]" for name in fractions if not 0 <= getattr(config, name) <= 1]
    if bad:
        got = ", ".join(f"{b} (got {getattr(config, b.split()[0])!r})" for b in bad)
        raise Ss3dError(f"[{section}] {got}")
