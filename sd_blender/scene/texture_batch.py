"""Generate Texture from the panel: the command line's `texture` run by a background process on
a copy of the file (scene/frame_range.run_in_background), so this Blender renders nothing and
waits for nothing; when it is done its textures are shown on the objects here."""
import json
import os

import bpy

from .apply import apply_as_baked_texture, load_image
from .jobs import output_directory, scene_file_stem
from .texels import TexturingError, bake_uv_names
from .frame_range import run_in_background
from .texture_generation import clear_views, view_path

AGAIN = "Generate Texture starts the views again"


def texture_objects(context):
    """The selected meshes, which Generate Texture textures."""
    return [obj for obj in context.selected_objects if obj.type == 'MESH']


def texture_problem(scene, objects):
    """What to fix before Generate Texture, or None."""
    if not objects:
        return "select the mesh objects to texture"
    settings = scene.sd_blender
    if settings.texture_strategy == "ACTIVE" and scene.camera is None:
        return "the Active strategy starts from the scene camera: the scene has none"
    if settings.texture_strategy == "CAMERAS" and not _selected_cameras(scene):
        return "the Cameras strategy uses the selected cameras: select some"
    return None


def _selected_cameras(scene):
    return [obj for obj in scene.objects if obj.type == 'CAMERA' and obj.select_get()]


def start_texture(scene, objects, server_url, token):
    """Choose (or make) the UV maps here, so this file has them too, then run `texture` in the
    background; returns (FrameBatch watching the views, the report's path)."""
    settings = scene.sd_blender
    uv_name = settings.texture_uv_map.strip() or None
    bake_uv_names(objects, uv_name)
    out = output_directory()
    stem = scene_file_stem(scene)
    clear_views(out, stem)
    strategy = settings.texture_strategy.lower()
    cameras = _selected_cameras(scene)
    count = len(cameras) if strategy == "cameras" else settings.texture_views
    arguments = [
        "--scene", scene.name, "--objects", ",".join(obj.name for obj in objects),
        "--strategy", strategy, "--views", str(count), "--mode", settings.texture_mode.lower(),
        "--texture-size", settings.texture_size, "--exponent", f"{settings.texture_exponent:g}",
        "--discard-angle", f"{settings.texture_discard_angle:g}", "--out", out, "--server", server_url,
    ]
    if strategy == "cameras":
        arguments += ["--cameras", ",".join(camera.name for camera in cameras)]
    if uv_name:
        arguments += ["--uv", uv_name]
    paths = [view_path(out, stem, index) for index in range(count)]
    batch = run_in_background("texture", arguments, paths, token, settings.use_previews, unit="view", again=AGAIN)
    return batch, os.path.join(out, f"{stem}_texture_report.json")


def show_textures(report_path):
    """Show the textures the report lists on their objects; returns their object names."""
    try:
        with open(report_path, encoding="utf-8") as report_file:
            report = json.load(report_file)
    except (OSError, ValueError) as error:
        raise TexturingError(f"cannot read the texture report {report_path}: {error}") from None
    shown = []
    for name, entry in report["objects"].items():
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != 'MESH' or entry["uv_map"] not in obj.data.uv_layers:
            continue
        apply_as_baked_texture(obj, load_image(entry["texture"]), entry["uv_map"])
        shown.append(name)
    return shown
