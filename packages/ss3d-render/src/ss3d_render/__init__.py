"""ss3d-render: Render meshes with Blender (bpy): synthetic multi-view sets and in-the-wild style image collections."""
