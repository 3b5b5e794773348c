"""The command line's whole-object texturing (docs/cli.md, docs/texturing.md):

    sd_blender texture SCENE.blend --objects A,B --prompt TEXT [--views 8] [--strategy orbit|cameras|active] ...
    sd_blender bake SCENE.blend --objects A[,B] --cameras C1,C2,... --images P1.png,P2.png,... --out TEXTURE.png
"""
import os
import time

import bpy

from ..scene.passes import read_image
from ..scene.texels import TexturingError, see, texture_targets
from ..scene.texturing import bake, report_entries, save_texture, show_on_objects, write_report
from ..scene.views import user_cameras
from .cli_common import open_scene, save_blend

TEXTURE_SIZES = (512, 4096)


def _names(text):
    return [name.strip() for name in text.split(",") if name.strip()]


def _texture_size(text):
    size = int(text)
    if not TEXTURE_SIZES[0] <= size <= TEXTURE_SIZES[1]:
        raise ValueError(f"--texture-size must be between {TEXTURE_SIZES[0]} and {TEXTURE_SIZES[1]}, got {size}")
    return size


def _add_common_arguments(parser):
    parser.add_argument("blend", nargs="?", help="the .blend to open (default: the file already open)")
    parser.add_argument("--scene", help="scene name (default: the active scene)")
    parser.add_argument("--objects", type=_names, required=True, help="comma-separated mesh objects to texture")
    parser.add_argument("--uv", help="the UV map to bake into (default: the active one; 'SD Bake' is made when "
                        "there is none or it cannot take a bake)")
    parser.add_argument("--texture-size", type=_texture_size, default=2048, help="texture side in pixels, 512-4096")
    parser.add_argument("--save-blend", help="save the .blend with the textures applied here")
    parser.set_defaults(frame=None)


def add_commands(commands):
    bake_command = commands.add_parser(
        "bake", help="project images from cameras onto objects and bake them into one UV texture")
    _add_common_arguments(bake_command)
    bake_command.add_argument("--cameras", type=_names, required=True, help="comma-separated camera objects")
    bake_command.add_argument("--images", type=_names, required=True,
                              help="comma-separated images, image i seen from camera i")
    bake_command.add_argument("--out", required=True, help="the texture PNG to write")


def _objects(names):
    missing = [name for name in names if name not in bpy.data.objects]
    if missing:
        raise TexturingError(f"there is no object named {', '.join(repr(name) for name in missing)}")
    return [bpy.data.objects[name] for name in names]


def _read_views(paths, count):
    if len(paths) != count:
        raise TexturingError(f"--images: one image per camera, got {len(paths)} image(s) for {count} camera(s)")
    for path in paths:
        if not os.path.isfile(path):
            raise TexturingError(f"--images: no image at {path}")
    return [read_image(os.path.abspath(path))[:, :, :3] for path in paths]


def report_path(texture_path):
    return os.path.splitext(texture_path)[0] + "_report.json"


def run_bake(args):
    started = time.monotonic()
    scene = open_scene(args)
    objects = _objects(args.objects)
    cameras = user_cameras(args.cameras)
    images = _read_views(args.images, len(cameras))
    targets = texture_targets(scene, objects, args.uv, args.texture_size, shared=True)
    views = [see(scene, camera, targets, image.shape[1], image.shape[0]) for camera, image in zip(cameras, images)]
    baked = bake(targets, views, images)[0]
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    print(save_texture(baked, out))
    show_on_objects(baked, out)
    seconds = {"blender": round(time.monotonic() - started, 3), "server": 0.0}
    print(write_report(report_path(out), report_entries(baked, out), views=[camera.name for camera in cameras],
                       seconds=seconds))
    _print_summary(baked)
    return save_blend(args)


def _print_summary(baked):
    measured = [value for value in baked.agreement if value is not None]
    agreement = f", view agreement {sum(measured) / len(measured):.2f}/255" if measured else ""
    print(f"{', '.join(baked.target.names)}: coverage {baked.coverage:.1%} in UV map '{baked.target.uv_name}'{agreement}")
