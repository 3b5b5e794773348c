"""Write the pictures of docs/animation.md and of the motion section of docs/conventions.md: a small
animated shot (a camera panning across a chequered wall, a cube moving right and turning), its
motion pass between two frames as the add-on computes it, and a `generate --frames` run in the
full temporal mode against a tiny-model server started for the occasion (its images are noise:
random weights; what they show is how a frame follows the one before and what the report plots).

    .venv/bin/python tools/animation_pictures.py [--out docs/images] [--model tiny] [--frames 8]

Writes, from frames 1 (N−1) and 2 (N) of the shot:
  motion_frames.png    the colour render of frame N−1 and of frame N
  motion_vectors.png   the motion pass of frame N as colours (hue: the direction from the pixel to
                       where its surface was in frame N−1; saturation: the distance, full at 32 px
                       or more; white: no motion), and the legend wheel next to it
  motion_arrows.png    frame N with an arrow every 24 px from the pixel to where its surface was
                       in frame N−1 (a dot at the pixel)
  motion_occlusion.png the occlusion mask of frame N (white: not seen in frame N−1)
  motion_warped.png    frame N−1 warped into frame N by the motion pass, magenta where occluded
and from `generate --frames` runs in every temporal mode (the pictures from the full mode):
  animation_warp_steps.png  frame N−1 generated; it warped into frame N with its hole (magenta);
                            the hole inpainted; frame N repainted at the warp strength
  animation_frames.png      the first generated frames, side by side
  animation_report.png      the run's frames_report.png
It prints the colour pass's warping error and each mode's mean warping error.
"""
import argparse
import json
import math
import os
import shutil
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
from sd_blender.core import temporal  # noqa: E402
from sd_blender.core.png import read_png, write_png  # noqa: E402
from sd_blender.core.warp import read_motion, warp, warping_error  # noqa: E402
from sd_blender.scene.motion import render_motion  # noqa: E402
from sd_blender.scene.passes import render_beauty  # noqa: E402
from sd_blender.ui import cli  # noqa: E402

WIDTH, HEIGHT = 256, 192
FULL_SATURATION_PIXELS = 32.0  # the motion drawn fully saturated
ARROW_SPACING = 24
MAGENTA = (255, 0, 255)
GAP = 4  # white pixels between pictures side by side


def emission_checker(name, scale, colour_1, colour_2, coordinates="UV"):
    """A material that glows in a checker pattern (Standard view transform: the render shows these
    colours whatever the light)."""
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    texture_coordinates = nodes.new("ShaderNodeTexCoord")
    checker = nodes.new("ShaderNodeTexChecker")
    checker.inputs["Scale"].default_value = scale
    checker.inputs["Color1"].default_value = (*colour_1, 1.0)
    checker.inputs["Color2"].default_value = (*colour_2, 1.0)
    links.new(texture_coordinates.outputs[coordinates], checker.inputs["Vector"])
    emission = nodes.new("ShaderNodeEmission")
    links.new(checker.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    return material


def build_shot(path, frames):
    """The shot over frames 1..frames: the camera pans right 2° a frame, the cube moves right 0.6 and
    up 0.15 units and turns 12° a frame; saved to path with a depth unit, 4 steps."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sd_blender.register()
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = WIDTH, HEIGHT, 100
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 8
    scene.cycles.use_denoising = False
    scene.view_settings.view_transform = "Standard"

    bpy.ops.mesh.primitive_plane_add(size=1.0, location=(0.0, 4.0, 1.0), rotation=(math.radians(90), 0.0, 0.0))
    wall = bpy.context.active_object
    wall.name, wall.scale = "Wall", (24.0, 14.0, 1.0)
    wall.data.materials.append(emission_checker("Wall", 24.0, (0.85, 0.8, 0.7), (0.25, 0.3, 0.4)))

    bpy.ops.mesh.primitive_cube_add(size=1.6)
    cube = bpy.context.active_object
    cube.name = "Cube"
    cube.data.materials.append(emission_checker("Cube", 2.0, (0.9, 0.45, 0.1), (0.15, 0.5, 0.2), "Generated"))
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.location = (0.0, -10.0, 1.0)
    for frame in range(1, frames + 1):  # a key on every frame: the same motion from each frame to the next
        step = frame - 1
        cube.location = (-2.2 + 0.6 * step, -1.5, 0.2 + 0.15 * step)
        cube.rotation_euler = (math.radians(20.0), 0.0, math.radians(12.0 * step))
        camera.rotation_euler = (math.radians(90.0), 0.0, math.radians(7.0 - 2.0 * step))
        for owner, data_path in ((cube, "location"), (cube, "rotation_euler"), (camera, "rotation_euler")):
            owner.keyframe_insert(data_path, frame=frame)

    settings = scene.sd_blender
    settings.prompt = "a wooden toy block in front of a tiled wall"
    settings.steps = 4
    settings.control_units.add().kind = "depth"
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return scene


def side_by_side(*images):
    """uint8 RGB (or grey) images of one height, left to right with white gaps."""
    images = [np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3] for image in images]
    gap = np.full((images[0].shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([part for image in images for part in (image, gap)][:-1], axis=1)


def scaled(image, factor):
    """image scaled by factor (nearest pixel)."""
    rows = np.arange(int(image.shape[0] * factor)) * image.shape[0] // int(image.shape[0] * factor)
    columns = np.arange(int(image.shape[1] * factor)) * image.shape[1] // int(image.shape[1] * factor)
    return image[rows][:, columns]


def motion_colours(motion):
    """(H, W, 3) uint8: hue from the direction of (X, Y) (x right, y down), saturation from its
    length (full at FULL_SATURATION_PIXELS), value 1."""
    x, y = motion[..., 0], motion[..., 1]
    hue = (np.arctan2(y, x) / (2 * np.pi)) % 1.0
    saturation = np.clip(np.hypot(x, y) / FULL_SATURATION_PIXELS, 0.0, 1.0)
    sector = hue * 6.0
    channel = np.stack([np.clip(np.abs((sector - shift) % 6.0 - 3.0) - 1.0, 0.0, 1.0) for shift in (0.0, 2.0, 4.0)],
                       axis=-1)  # the fully saturated colour of each hue: red, yellow, green, cyan, blue, magenta
    rgb = 1.0 - saturation[..., None] * (1.0 - channel)
    return np.round(rgb * 255).astype(np.uint8)


def legend(height):
    """The wheel: the colour at offset (dx, dy) from its centre is the colour of a motion (dx, dy),
    its rim FULL_SATURATION_PIXELS; white around it."""
    radius = height // 2 - 8
    rows, columns = np.mgrid[0:height, 0:height] + 0.5
    offset = np.stack([columns - height / 2, rows - height / 2], axis=-1)
    motion = offset / radius * FULL_SATURATION_PIXELS
    wheel = motion_colours(motion)
    outside = np.hypot(offset[..., 0], offset[..., 1]) > radius
    wheel[outside] = 255
    rim = np.abs(np.hypot(offset[..., 0], offset[..., 1]) - radius) < 0.75
    wheel[rim] = 60
    return wheel


def draw_arrows(image, motion):
    """image dimmed, with a line every ARROW_SPACING px from the pixel centre to where its surface
    was in frame N−1 (black) and a red dot at the pixel."""
    canvas = (image.astype(np.float32) * 0.55 + 255 * 0.45).astype(np.uint8)
    height, width = motion.shape[:2]
    for row in range(ARROW_SPACING // 2, height, ARROW_SPACING):
        for column in range(ARROW_SPACING // 2, width, ARROW_SPACING):
            start = np.array([column + 0.5, row + 0.5])
            end = start + motion[row, column]
            for t in np.linspace(0.0, 1.0, int(np.ceil(np.abs(end - start).max() * 2)) + 2):
                x, y = np.floor(start + t * (end - start)).astype(int)
                if 0 <= x < width and 0 <= y < height:
                    canvas[y, x] = 0
            canvas[max(row - 1, 0):row + 2, max(column - 1, 0):column + 2] = (220, 0, 0)
    return canvas


def motion_pictures(scene, out):
    """The motion pictures of frames 1 (N−1) and 2 (N); returns the colour warping error."""
    scene.frame_set(1)
    before = render_beauty(scene, WIDTH, HEIGHT)
    scene.frame_set(2)
    now = render_beauty(scene, WIDTH, HEIGHT)
    result = render_motion(scene, WIDTH, HEIGHT)
    warped, inside = warp(before, result.motion)
    warped = np.round(warped).astype(np.uint8)
    warped[result.occluded | ~inside] = MAGENTA
    pictures = {
        "motion_frames.png": side_by_side(before, now),
        "motion_vectors.png": side_by_side(motion_colours(result.motion), legend(HEIGHT)),
        "motion_arrows.png": draw_arrows(now, result.motion),
        "motion_occlusion.png": np.where(result.occluded, 255, 0).astype(np.uint8),
        "motion_warped.png": warped,
    }
    for name, pixels in pictures.items():
        write_png(str(out / name), pixels)
        print(out / name)
    error, compared = warping_error(now, before, result.motion, result.occluded)
    magnitude = np.hypot(result.motion[..., 0], result.motion[..., 1])
    print(f"motion: {magnitude.min():.1f} to {magnitude.max():.1f} px, occluded {result.occluded.mean():.1%}; "
          f"colour of frame 1 warped into frame 2: mean error {error:.2f}/255 over {compared:.1%} of the pixels")
    return error


def generated_pictures(blend, folder, out, model, frames):
    """Run `generate --frames 1-F` in every temporal mode against a tiny-model server; the pictures
    of the full run; prints each mode's mean warping errors."""
    means = {}
    with running_server(cache_dir=folder / "cache", model=model) as server:
        for mode in ("off", "anchor", "warp", "full"):
            status = cli.run([
                "generate", str(blend), "--frames", f"1-{frames}", "--temporal", mode, "--seed", "3",
                "--depth-range", "shot", "--out", str(folder / mode), "--server", server.url,
            ])
            if status != 0:
                sys.exit(status)
            report = json.loads((folder / mode / "frames_report.json").read_text())
            means[mode] = report["mean_warping_error"], report["mean_control_warping_error"]
    run = folder / "full"
    frame = [read_png(str(run / f"shot_Scene_{number:04d}.png"))[..., :3] for number in range(1, frames + 1)]
    passes = run / "passes"
    start, hole = temporal.warped_start(frame[0], read_motion(str(passes / "motion_0002.exr")),
                                        read_png(str(passes / "occlusion_0002.png")) >= 128)
    start[hole] = MAGENTA
    inpainted = read_png(str(passes / "inpainted_0002.png"))[..., :3]
    # The tiny model's noise hardly compresses: smaller pictures.
    write_png(str(out / "animation_warp_steps.png"),
              side_by_side(*(scaled(image, 0.75) for image in (frame[0], start, inpainted, frame[1]))))
    write_png(str(out / "animation_frames.png"), side_by_side(*(scaled(image, 0.5) for image in frame[:4])))
    shutil.copyfile(run / "frames_report.png", out / "animation_report.png")
    for name in ("animation_warp_steps.png", "animation_frames.png", "animation_report.png"):
        print(out / name)
    print(f"{model} model, frames 1-{frames}, mean warping error (control images):")
    for mode, (generated, control) in means.items():
        print(f"  {mode:7s}{generated:8.3f} ({control:.3f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=8, help="frames of the generated run (at least 4)")
    parser.add_argument("--keep", type=Path, help="keep the shot and the runs (frames, passes/, reports) here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sd_blender_pictures_") as folder:
        folder = args.keep or Path(folder)
        scene = build_shot(folder / "shot.blend", max(args.frames, 4))
        motion_pictures(scene, args.out)
        generated_pictures(folder / "shot.blend", folder, args.out, args.model, max(args.frames, 4))
    # Everything is written. bpy 4.5 can crash while tearing down at interpreter exit after this run
    # (status 139 once all was done): leave without the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
