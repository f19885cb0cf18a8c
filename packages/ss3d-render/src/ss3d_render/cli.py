"""``ss3d-render``: Render meshes with Blender (bpy): synthetic multi-view sets and in-the-wild style image collections."""

from __future__ import annotations

from ss3d_data.clikit import make_app

app = make_app("ss3d-render", "Render meshes with Blender (bpy): synthetic multi-view sets and in-the-wild style image collections.")


def main() -> None:
    app()
