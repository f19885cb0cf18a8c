"""ss3d-render: Render meshes with Blender (bpy): synthetic multi-view sets and in-the-wild style image collections.

Public API: :func:`render_views`, :func:`render_collection`, :func:`rebuild_sidecar`, :class:`RenderScene`
(these import ``bpy`` on first use, about half a second), :class:`RenderConfig` / :func:`render_config`, and the
camera helpers of :mod:`ss3d_render.cameras` (numpy only).
"""

from __future__ import annotations

import importlib
from typing import Any

from ss3d_data.cameras import look_at_cam2world
from ss3d_data.config import RenderConfig, render_config
from ss3d_render.cameras import intrinsics_matrix, sphere_silhouette
from ss3d_render.jobs import RenderSummary

_LAZY = {  # name -> module; these modules import bpy, so only when asked for
    "render_views": "ss3d_render.views",
    "render_collection": "ss3d_render.collection",
    "rebuild_sidecar": "ss3d_render.collection",
    "RenderScene": "ss3d_render.scene",
}

__all__ = [
    "RenderConfig",
    "RenderScene",
    "RenderSummary",
    "intrinsics_matrix",
    "look_at_cam2world",
    "rebuild_sidecar",
    "render_collection",
    "render_config",
    "render_views",
    "sphere_silhouette",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ss3d_render' has no attribute {name!r}")
