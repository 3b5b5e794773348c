"""Write the pictures of docs/texturing.md: a sequential `texture` run on Suzanne against a tiny-model
server started for the occasion (its images are noise: random weights; what the pictures show is
where each view looks, what it repaints and how the views are fused and baked).

    .venv/bin/python tools/texturing_pictures.py [--out docs/images] [--model tiny]

Writes texturing_views.png (the views' images), texturing_masks.png (the sequential masks: white
generate, grey refine, black keep), texturing_texture.png (the baked UV texture) and
texturing_render.png (the object rendered with it from an angle no view had).
"""
import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for variable in ("BLENDER_USER_RESOURCES", "XDG_CACHE_HOME", "MESA_SHADER_CACHE_DIR"):
    os.environ.setdefault(variable, os.path.join(tempfile.mkdtemp(prefix="sd_blender_pictures_"), variable.lower()))
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import bpy  # noqa: E402
import numpy as np  # noqa: E402
import sd_blender  # noqa: E402
from live_server import running_server  # noqa: E402
from mathutils import Vector  # noqa: E402
from sd_blender.core.png import write_png  # noqa: E402
from sd_blender.scene.passes import read_image  # noqa: E402
from sd_blender.ui import cli  # noqa: E402

VIEWS = 6
VIEW_SIZE = 256
THUMBNAIL = 160


def build_scene(path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sd_blender.register()
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_monkey_add(size=2.0)
    monkey = bpy.context.active_object
    monkey.name = "Suzanne"
    monkey.modifiers.new("Subdivision", "SUBSURF").levels = 1
    bpy.ops.object.shade_smooth()
    bpy.ops.object.camera_add(location=(1.2, -6.0, 1.0))
    camera = bpy.context.active_object
    camera.rotation_euler = (-Vector(camera.location)).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    settings = scene.sd_blender
    settings.prompt = "a bronze statue of a monkey, weathered patina"
    settings.steps = 8
    settings.control_units.add().kind = "depth"
    settings.control_units.add().kind = "normal"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def strip(paths, size=THUMBNAIL):
    """The images side by side, each scaled to size × size (nearest pixel), as one 8-bit picture."""
    tiles = []
    for path in paths:
        pixels = read_image(str(path))[:, :, :3]
        rows = np.arange(size) * pixels.shape[0] // size
        columns = np.arange(size) * pixels.shape[1] // size
        tiles.append(pixels[rows][:, columns])
    gap = np.ones((size, 4, 3), np.float32)
    joined = np.concatenate([piece for tile in tiles for piece in (tile, gap)][:-1], axis=1)
    return np.round(joined * 255).astype(np.uint8)


def render_from_a_new_angle(path):
    """Suzanne with her baked texture, lit, from an angle none of the views had."""
    scene = bpy.context.scene
    data = bpy.data.cameras.new("Fresh")
    camera = bpy.data.objects.new("Fresh", data)
    scene.collection.objects.link(camera)
    camera.location = (-4.5, -3.5, 2.5)
    camera.rotation_euler = (-Vector(camera.location)).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.rotation_euler = (math.radians(40), 0, math.radians(-30))
    scene.collection.objects.link(sun)
    scene.world = scene.world or bpy.data.worlds.new("World")
    scene.world.color = (0.3, 0.3, 0.3)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 16
    scene.render.resolution_x = scene.render.resolution_y = 320
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(path)
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(write_still=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images")
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sd_blender_pictures_") as folder:
        folder = Path(folder)
        build_scene(folder / "suzanne.blend")
        with running_server(cache_dir=folder / "cache", model=args.model) as server:
            status = cli.run([
                "texture", str(folder / "suzanne.blend"), "--objects", "Suzanne", "--strategy", "active",
                "--views", str(VIEWS), "--mode", "sequential", "--size", str(VIEW_SIZE), str(VIEW_SIZE),
                "--texture-size", "1024", "--seed", "3", "--out", str(folder / "out"), "--server", server.url,
            ])
        if status != 0:
            sys.exit(status)
        out = folder / "out"
        views = sorted(out.glob("suzanne_Scene_view_??.png"))
        masks = sorted(out.glob("suzanne_Scene_mask_??.png"))
        pictures = {
            "texturing_views.png": strip(views),
            "texturing_masks.png": strip(masks),
            "texturing_texture.png": strip([out / "suzanne_Scene_Suzanne_texture.png"], size=320),
        }
        for name, pixels in pictures.items():
            write_png(str(args.out / name), pixels)
            print(args.out / name)
        render_from_a_new_angle(args.out / "texturing_render.png")
        print(args.out / "texturing_render.png")


if __name__ == "__main__":
    main()
