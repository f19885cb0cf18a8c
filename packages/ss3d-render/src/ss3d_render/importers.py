"""Mesh files -> Blender objects placed in the canonical frame.

Each importer is asked for the file's raw coordinates (Blender's OBJ/PLY/STL importers convert axes unless told
that the file is already Z-up, Y-forward), so the manifest's ``to_canonical`` matrix (file coordinates -> canonical
frame) applies unchanged. glTF is Y-up by specification and Blender's importer always turns it Z-up, so that
conversion is undone before ``to_canonical``. OFF has no Blender importer: it goes through trimesh.

Materials: textures of OBJ+MTL and GLB/GLTF come with the importers; vertex colours (PLY, OFF) become a material
reading the colour attribute; objects without any material get a plain grey one. Textures whose file cannot be
found are dropped (the material's own colour shows instead of Cycles' magenta) and listed by
:func:`drop_unresolved_textures` (the render commands count them and name them in their log).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
import trimesh
from mathutils import Matrix

from ss3d_data.errors import Ss3dError

SUPPORTED_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")
# Blender's glTF importer maps glTF (x, y, z) to Blender (x, -z, y); its inverse recovers the file's coordinates.
GLTF_TO_BLENDER = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
_RAW_AXES = {"forward_axis": "Y", "up_axis": "Z"}  # "the file is already Blender-oriented": no conversion
_GREY = (0.6, 0.6, 0.6, 1.0)


def _run_importer(path: Path) -> None:
    suffix = path.suffix.lower()
    name = str(path)
    if suffix == ".obj":
        bpy.ops.wm.obj_import(filepath=name, **_RAW_AXES)
    elif suffix == ".ply":
        bpy.ops.wm.ply_import(filepath=name, import_colors="SRGB", **_RAW_AXES)
    elif suffix == ".stl":
        bpy.ops.wm.stl_import(filepath=name, **_RAW_AXES)
    elif suffix in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=name, loglevel=50)
    elif suffix == ".off":
        _import_with_trimesh(path)
    else:
        raise Ss3dError(
            f"{path}: unsupported mesh format {suffix!r}", hint=f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )


def _import_with_trimesh(path: Path) -> None:
    """Build a Blender mesh straight from trimesh arrays (formats without a Blender importer)."""
    try:
        tm = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for unreadable files
        raise Ss3dError(f"{path}: cannot read mesh ({type(err).__name__}: {err})") from None
    if len(tm.faces) == 0:
        raise Ss3dError(f"{path}: mesh has no faces")
    mesh = bpy.data.meshes.new(path.stem)
    mesh.from_pydata(tm.vertices.tolist(), [], tm.faces.tolist())
    colours = getattr(tm.visual, "vertex_colors", None) if tm.visual.kind == "vertex" else None
    if colours is not None and len(colours) == len(tm.vertices):
        attr = mesh.color_attributes.new("Col", "BYTE_COLOR", "POINT")
        attr.data.foreach_set("color_srgb", (np.asarray(colours, dtype=np.float32) / 255.0).ravel())
    mesh.validate()
    mesh.update()
    obj = bpy.data.objects.new(path.stem, mesh)
    bpy.context.scene.collection.objects.link(obj)


def _material(name: str, colour_attribute: str | None) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    bsdf = material.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Roughness"].default_value = 0.6
    if colour_attribute is None:
        bsdf.inputs["Base Color"].default_value = _GREY
    else:
        node = material.node_tree.nodes.new("ShaderNodeVertexColor")
        node.layer_name = colour_attribute
        material.node_tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def _make_matte(material: bpy.types.Material) -> None:
    """Turn off the dielectric specular lobe of every Principled BSDF: the decoder predicts view-independent
    colour (no view direction input), so highlights are noise to it; it also makes each Cycles sample about a
    quarter cheaper. Metallic surfaces keep their (metallic) reflection."""
    if material.node_tree is None:
        return
    for node in material.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            node.inputs["Specular IOR Level"].default_value = 0.0


def _ensure_materials(obj: bpy.types.Object, matte: bool) -> None:
    mesh = obj.data
    if any(slot.material is not None for slot in obj.material_slots):
        if matte:
            for slot in obj.material_slots:
                if slot.material is not None:
                    _make_matte(slot.material)
        return
    colour = mesh.color_attributes[0].name if len(mesh.color_attributes) else None
    mesh.materials.clear()
    material = _material(f"{obj.name}-material", colour)
    if matte:
        _make_matte(material)
    mesh.materials.append(material)


def import_mesh(path: str | Path, to_canonical: np.ndarray, matte: bool = True) -> list[bpy.types.Object]:
    """Import ``path`` into the current scene and move it into the canonical frame with ``to_canonical`` [4, 4]
    (file coordinates -> canonical). Returns the new objects (meshes and their parents); cameras and lights that
    some files carry are dropped so the scene's own lighting stays in charge. ``matte`` removes dielectric
    specular highlights (see :func:`_make_matte`)."""
    path = Path(path)
    if not path.is_file():
        raise Ss3dError(f"{path}: mesh file not found")
    before = set(bpy.data.objects)
    _run_importer(path)
    new = [obj for obj in bpy.data.objects if obj not in before]
    for obj in [o for o in new if o.type in ("CAMERA", "LIGHT")]:
        new.remove(obj)
        bpy.data.objects.remove(obj, do_unlink=True)
    meshes = [obj for obj in new if obj.type == "MESH" and len(obj.data.polygons) > 0]
    if not meshes:
        for obj in new:
            bpy.data.objects.remove(obj, do_unlink=True)
        raise Ss3dError(f"{path}: the file holds no mesh faces")
    matrix = np.asarray(to_canonical, dtype=np.float64)
    if path.suffix.lower() in (".glb", ".gltf"):
        matrix = matrix @ np.linalg.inv(GLTF_TO_BLENDER)
    placement = Matrix(matrix.tolist())
    for obj in new:
        if obj.parent is None or obj.parent not in new:  # children follow their parents
            obj.matrix_world = placement @ obj.matrix_world
    for obj in meshes:
        _ensure_materials(obj, matte)
    bpy.context.view_layer.update()
    return new


def _missing_image(node: bpy.types.Node) -> str | None:
    """The path Blender tried for an image texture node whose file does not exist (None if it resolves)."""
    image = node.image
    if image is None:
        return "(no image)"
    if image.source == "FILE" and image.packed_file is None:
        path = bpy.path.abspath(image.filepath)
        if not Path(path).is_file():
            return path
    return None


def drop_unresolved_textures(objects: list[bpy.types.Object]) -> list[str]:
    """Drop the image textures of the materials of ``objects`` whose file does not exist, and return their paths
    as Blender tried them, sorted, each once.

    Sweet Home 3D's OBJ files often name textures by a path on their author's disk (``map_Kd C:/Documents and
    Settings/...``; 32 of the 880 textures of the Debian library, none of them shipped). Cycles renders a missing
    image magenta, which would teach the model colours no object has; without the node, the material shows its
    diffuse colour (the MTL's ``Kd``, which Blender's importer puts on the shader whether or not a texture is
    named)."""
    missing: set[str] = set()
    for material in {slot.material for obj in objects for slot in obj.material_slots if slot.material is not None}:
        if material.node_tree is None:
            continue
        for node in [n for n in material.node_tree.nodes if n.type == "TEX_IMAGE"]:
            path = _missing_image(node)
            if path is not None:
                missing.add(path if node.image is not None else f"(no image: material {material.name})")
                material.node_tree.nodes.remove(node)
    return sorted(missing)


def world_bounds(objects: list[bpy.types.Object]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (min [3], max [3]) of the mesh vertices of ``objects`` in world coordinates."""
    points = []
    for obj in objects:
        if obj.type != "MESH":
            continue
        coords = np.empty(len(obj.data.vertices) * 3, dtype=np.float64)
        obj.data.vertices.foreach_get("co", coords)
        local = coords.reshape(-1, 3)
        world = np.asarray(obj.matrix_world, dtype=np.float64)
        points.append(local @ world[:3, :3].T + world[:3, 3])
    if not points:
        raise Ss3dError("no mesh objects to measure")
    stacked = np.concatenate(points)
    return stacked.min(0), stacked.max(0)
