"""One persistent Blender scene per process: camera, lights and world built once, only the object is swapped.

Cycles keeps its synchronised scene between renders (``render.use_persistent_data``), so a new view costs a camera
move and a render; a new instance costs one import plus the geometry upload. Renders go to an RGBA PNG in a private
temporary folder and come back as a uint8 array: film is transparent, so alpha is the object's coverage (the mask).
Given a :class:`~ss3d_render.jobs.BlenderLog`, the scene sends the Python-level output of its bpy calls there and
notes each mesh's unresolved textures in it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix
from PIL import Image

from ss3d_data.cameras import spherical_to_position
from ss3d_data.errors import Ss3dError
from ss3d_render.cameras import blender_matrix_world
from ss3d_render.importers import drop_unresolved_textures, import_mesh
from ss3d_render.jobs import BlenderLog

_SENSOR_WIDTH_MM = 36.0
_HDRI_SIZE = (64, 32)  # HDRIs are averaged down to this size (width, height)
_HDRI_PEAK = 4.0  # and clipped to this multiple of their mean radiance


def find_hdris() -> list[Path]:
    """The CC0 studio-light HDRIs that ship with Blender (the bpy module's datafiles, or Debian's blender-data)."""
    folders = [bpy.utils.system_resource("DATAFILES", path="studiolights/world") or ""]
    folders += glob.glob("/usr/share/blender/*/datafiles/studiolights/world")
    found = {Path(p).name: Path(p) for folder in folders if folder for p in sorted(glob.glob(f"{folder}/*.exr"))}
    return [found[name] for name in sorted(found)]


class RenderScene:
    """A reusable Cycles scene rendering square ``image_size`` RGBA views of one object at a time."""

    def __init__(
        self, image_size: int, samples: int, max_bounces: int, use_hdris: bool = True, matte: bool = True,
        log: BlenderLog | None = None,
    ) -> None:
        self._log = log
        self.textures_unresolved = 0  # unresolved image textures of all meshes loaded so far
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.image_size = image_size
        self.samples = samples
        self.max_bounces = max_bounces
        self.matte = matte
        self._scene = bpy.context.scene
        self._configure_engine()
        self._camera = self._make_camera()
        self._lights = [self._make_sun("key", shadows=True), self._make_sun("fill", shadows=False)]
        self._world_nodes = self._make_world()
        self._hdris = [self._load_hdri(p) for p in find_hdris()] if use_hdris else []
        self._objects: list[bpy.types.Object] = []
        # frames go through a PNG in memory-backed /dev/shm where there is one
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._tmp = tempfile.TemporaryDirectory(prefix="ss3d-render-", dir=shm)
        self._frame_path = os.path.join(self._tmp.name, "view.png")
        self._scene.render.filepath = self._frame_path

    # ---- construction -------------------------------------------------------------------------------------------
    def _configure_engine(self) -> None:
        scene, render = self._scene, self._scene.render
        render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = self.samples
        scene.cycles.use_adaptive_sampling = False  # fixed samples: deterministic cost and noise
        scene.cycles.use_denoising = False
        scene.cycles.seed = 0
        scene.cycles.max_bounces = self.max_bounces
        scene.cycles.diffuse_bounces = min(2, self.max_bounces)
        scene.cycles.glossy_bounces = min(2, self.max_bounces)
        scene.cycles.transparent_max_bounces = 8
        scene.cycles.sample_clamp_direct = 4.0  # bounds rare bright paths (fireflies) at low sample counts
        scene.cycles.sample_clamp_indirect = 1.0
        render.use_persistent_data = True
        render.film_transparent = True
        render.resolution_x = render.resolution_y = self.image_size
        render.resolution_percentage = 100
        render.image_settings.file_format = "PNG"
        render.image_settings.color_mode = "RGBA"
        render.image_settings.color_depth = "8"
        render.image_settings.compression = 0
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.display_settings.display_device = "sRGB"

    def _make_camera(self) -> bpy.types.Object:
        data = bpy.data.cameras.new("ss3d-camera")
        data.sensor_fit = "HORIZONTAL"
        data.sensor_width = _SENSOR_WIDTH_MM
        data.clip_start, data.clip_end = 0.01, 100.0
        camera = bpy.data.objects.new("ss3d-camera", data)
        self._scene.collection.objects.link(camera)
        self._scene.camera = camera
        return camera

    def _make_sun(self, name: str, shadows: bool) -> bpy.types.Object:
        light = bpy.data.lights.new(f"ss3d-{name}", "SUN")
        light.use_shadow = shadows  # a shadowless fill saves one shadow ray per sample
        light.angle = np.radians(5.0)  # slightly soft shadows
        obj = bpy.data.objects.new(f"ss3d-{name}", light)
        self._scene.collection.objects.link(obj)
        return obj

    def _make_world(self) -> dict[str, Any]:
        world = bpy.data.worlds.new("ss3d-world")
        # No importance map for the world: its bake costs about a second on every world change (each instance
        # here), while the small, soft HDRIs and the suns light the object well enough without it.
        world.cycles.sampling_method = "NONE"
        self._scene.world = world
        nodes, links = world.node_tree.nodes, world.node_tree.links
        background = nodes.get("Background")
        environment = nodes.new("ShaderNodeTexEnvironment")
        mapping = nodes.new("ShaderNodeMapping")
        coords = nodes.new("ShaderNodeTexCoord")
        links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
        links.new(mapping.outputs["Vector"], environment.inputs["Vector"])
        return {"tree": world.node_tree, "background": background, "environment": environment, "mapping": mapping}

    @staticmethod
    def _load_hdri(path: Path) -> bpy.types.Image:
        """A small, tamed copy of an HDRI as a generated float image.

        Without an importance map (see ``_make_world``) an HDRI's small bright spots (the sun) are found only by
        chance and show as fireflies at 16 samples. Lighting needs only the low frequencies, so the HDRI is
        box-averaged to ``_HDRI_SIZE``, its peaks are clipped to a few times its mean radiance and it is scaled to
        mean 1, so that a world strength means the same brightness for every HDRI and for a uniform sky."""
        source = bpy.data.images.load(str(path), check_existing=False)
        width, height = source.size
        pixels = np.empty(width * height * 4, dtype=np.float32)
        source.pixels.foreach_get(pixels)
        bpy.data.images.remove(source)
        rgb = pixels.reshape(height, width, 4)[..., :3]
        out_w, out_h = _HDRI_SIZE
        rgb = rgb[: height - height % out_h, : width - width % out_w]
        small = rgb.reshape(out_h, rgb.shape[0] // out_h, out_w, rgb.shape[1] // out_w, 3).mean(axis=(1, 3))
        small = np.minimum(small, _HDRI_PEAK * small.mean())
        small = small / max(float(small.mean()), 1e-6)  # mean radiance 1: the world strength sets the brightness
        image = bpy.data.images.new(f"ss3d-hdri-{path.stem}", out_w, out_h, alpha=False, float_buffer=True)
        rgba = np.concatenate([small, np.ones((out_h, out_w, 1), np.float32)], axis=-1)
        image.pixels.foreach_set(rgba.ravel())
        image.pack()
        image.use_fake_user = True  # survives the orphan purge between instances
        return image

    # ---- per instance -------------------------------------------------------------------------------------------
    @property
    def objects(self) -> list[bpy.types.Object]:
        """The objects of the currently loaded mesh (empty before the first load)."""
        return list(self._objects)

    def _captured(self) -> contextlib.AbstractContextManager[None]:
        return self._log.capture() if self._log is not None else contextlib.nullcontext()

    def load_object(self, path: str | Path, to_canonical: np.ndarray) -> list[str]:
        """Replace the current object with the mesh at ``path``, placed by ``to_canonical`` [4, 4]. Returns the
        paths of its textures that could not be read (see :func:`~ss3d_render.importers.drop_unresolved_textures`)."""
        self.clear_object()
        with self._captured():
            self._objects = import_mesh(path, to_canonical, matte=self.matte)
        missing = drop_unresolved_textures(self._objects)
        self.textures_unresolved += len(missing)
        if missing and self._log is not None:
            self._log.note(f"ss3d-render: {path}: {len(missing)} textures unresolved: {'; '.join(missing)}")
        return missing

    def set_noise_seed(self, seed: int) -> None:
        """Cycles' sampling seed: drawn per instance so that instances do not share one noise pattern."""
        self._scene.cycles.seed = int(seed) % (2**31)

    def clear_object(self) -> None:
        for obj in self._objects:
            bpy.data.objects.remove(obj, do_unlink=True)
        self._objects = []
        bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)

    def randomise_lighting(self, rng: np.random.Generator) -> dict[str, Any]:
        """Random world light (an HDRI at a random rotation when available, else a uniform sky) plus a key and a
        fill sun from random directions. Returns a JSON-ready description for the sample's ``extra``."""
        tree, background = self._world_nodes["tree"], self._world_nodes["background"]
        for link in list(background.inputs["Color"].links):
            tree.links.remove(link)
        description: dict[str, Any] = {}
        if self._hdris and rng.random() < 0.5:
            index = int(rng.integers(len(self._hdris)))
            environment = self._world_nodes["environment"]
            environment.image = self._hdris[index]
            rotation = float(rng.uniform(0, 2 * np.pi))
            self._world_nodes["mapping"].inputs["Rotation"].default_value = (0.0, 0.0, rotation)
            tree.links.new(environment.outputs["Color"], background.inputs["Color"])
            strength = float(rng.uniform(0.3, 0.8))
            name = self._hdris[index].name.removeprefix("ss3d-hdri-")
            description["world"] = {"hdri": name, "rotation_rad": rotation}
        else:
            grey = float(rng.uniform(0.7, 1.0))
            background.inputs["Color"].default_value = (grey, grey, grey, 1.0)
            strength = float(rng.uniform(0.3, 0.8))
            description["world"] = {"colour": grey}
        background.inputs["Strength"].default_value = strength
        description["world"]["strength"] = strength
        for light, (lo, hi) in zip(self._lights, ((1.0, 2.5), (0.0, 0.6))):
            azimuth, elevation = float(rng.uniform(0, 360)), float(rng.uniform(15, 80))
            energy = float(rng.uniform(lo, hi))
            light.data.energy = energy
            direction = -spherical_to_position(azimuth, elevation, 1.0)  # from the light towards the origin
            light.rotation_euler = _sun_rotation(direction)
            description[light.name] = {"azimuth_deg": azimuth, "elevation_deg": elevation, "strength": energy}
        return description

    # ---- per view -----------------------------------------------------------------------------------------------
    def render(self, cam2world: np.ndarray, focal_px: float) -> np.ndarray:
        """Render the current object from OpenCV ``cam2world`` [4, 4] with ``focal_px`` (principal point at the
        centre). Returns RGBA uint8 [H, W, 4] with straight (unpremultiplied) colour; alpha = coverage."""
        if not self._objects:
            raise Ss3dError("no object loaded to render")
        self._camera.data.lens = focal_px * _SENSOR_WIDTH_MM / self.image_size
        self._camera.matrix_world = Matrix(blender_matrix_world(cam2world).tolist())
        with self._captured():
            bpy.ops.render.render(write_still=True)
        with Image.open(self._frame_path) as image:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8).copy()
        return rgba

    def settings(self) -> dict[str, Any]:
        """The renderer's settings for a sample's ``extra``."""
        return {
            "renderer": "blender-cycles",
            "blender_version": bpy.app.version_string,
            "cycles_samples": self.samples,
            "max_bounces": self.max_bounces,
            "denoise": False,
            "view_transform": "Standard",
            "matte": self.matte,
            "image_size": self.image_size,
        }

    def close(self) -> None:
        self.clear_object()
        self._tmp.cleanup()

    def __enter__(self) -> RenderScene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sun_rotation(direction: np.ndarray) -> tuple[float, float, float]:
    """Euler angles turning a sun (which shines along its local -Z) to shine along ``direction`` [3]."""
    from mathutils import Vector

    return tuple(Vector(direction.tolist()).to_track_quat("-Z", "Y").to_euler())
