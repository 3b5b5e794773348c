"""The command line's whole-object texturing (docs/cli.md, docs/texturing.md):

    sd_blender texture SCENE.blend --objects A,B --prompt TEXT [--views 8] [--strategy orbit|cameras|active] ...
    sd_blender bake SCENE.blend --objects A[,B] --cameras C1,C2,... --images P1.png,P2.png,... --out TEXTURE.png
"""
import argparse
import dataclasses
import functools
import os
import secrets
import time

import bpy

from ..core.client import DEFAULT_SERVER_URL, ServerClient
from ..core.job import GenerationJob
from ..scene import texture_generation
from ..scene.jobs import output_directory, scene_file_stem
from ..scene.passes import read_image
from ..scene.request import generation_size
from ..scene.texels import TexturingError, see, texture_targets
from ..scene.texturing import FusionOptions, bake, report_entries, save_texture, show_on_objects, write_report
from ..scene.views import STRATEGIES, placed_views, temporary_cameras, user_cameras
from .cli_common import (
    HOW_TO_RETRY, add_cancel_argument, add_pass_arguments, add_previews_argument, apply_arguments, ask_for_previews,
    control_units, open_scene, save_blend, server_limits, wait_with_progress,
)

TEXTURE_SIZES = (512, 4096)


def _names(text):
    return [name.strip() for name in text.split(",") if name.strip()]


def _texture_size(text):
    size = int(text)
    if not TEXTURE_SIZES[0] <= size <= TEXTURE_SIZES[1]:
        raise argparse.ArgumentTypeError(f"--texture-size must be between {TEXTURE_SIZES[0]} and {TEXTURE_SIZES[1]}, got {size}")
    return size


def _add_common_arguments(parser):
    parser.add_argument("blend", nargs="?", help="the .blend to open (default: the file already open)")
    parser.add_argument("--scene", help="scene name (default: the active scene)")
    parser.add_argument("--objects", type=_names, required=True, help="comma-separated mesh objects to texture")
    parser.add_argument("--uv", help="the UV map to bake into (default: the active one; 'SD Bake' is made when "
                        "there is none or it cannot take a bake)")
    parser.add_argument("--texture-size", type=_texture_size, default=2048, help="texture side in pixels, 512-4096")
    parser.add_argument("--exponent", type=float, default=FusionOptions.exponent,
                        help="p of the views' weights cos^p per texel (default %(default)s): higher favours square-on views")
    parser.add_argument("--discard-angle", type=_discard_angle, default=FusionOptions.discard_angle,
                        help="views seeing a texel more obliquely than this (degrees) do not count (default %(default)s)")
    parser.add_argument("--save-blend", help="save the .blend with the textures applied here")
    parser.set_defaults(frame=None)


def _discard_angle(text):
    angle = float(text)
    if not 0 < angle <= 90:
        raise argparse.ArgumentTypeError(f"--discard-angle must be above 0 and at most 90 degrees, got {angle}")
    return angle


def _fusion(args):
    return FusionOptions(args.exponent, args.discard_angle)


def add_commands(commands):
    texture = commands.add_parser(
        "texture", help="generate views around objects on the server and bake them into UV textures")
    _add_common_arguments(texture)
    texture.add_argument("--prompt")
    texture.add_argument("--negative-prompt")
    texture.add_argument("--views", type=int, default=8, help="how many views (orbit and active strategies)")
    texture.add_argument("--strategy", choices=STRATEGIES, default="orbit",
                         help="orbit: around the objects; cameras: the --cameras; active: the scene camera, "
                         "then views that see what is still unseen")
    texture.add_argument("--cameras", type=_names, default=[], help="camera objects for --strategy cameras")
    texture.add_argument("--mode", choices=texture_generation.MODES, default="sequential")
    texture.add_argument("--seed", type=int, help="one seed for every view (default: the scene's, else random)")
    texture.add_argument("--steps", type=int)
    texture.add_argument("--guidance-scale", type=float)
    texture.add_argument("--scheduler")
    texture.add_argument("--size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                         help="each view's size (default: the scene's generation size)")
    texture.add_argument("--controls", type=control_units,
                         help="KIND[:WEIGHT[:START[:END]]],... replaces the scene's control units (e.g. depth,normal)")
    add_pass_arguments(texture)
    texture.add_argument("--out", help="output folder (default: 'sd_blender' next to the .blend)")
    texture.add_argument("--server", default=os.environ.get("SD_BLENDER_SERVER_URL", DEFAULT_SERVER_URL))
    texture.add_argument("--token", default=os.environ.get("SD_BLENDER_TOKEN", ""))
    add_previews_argument(texture)
    add_cancel_argument(texture)
    texture.set_defaults(num_images=None, guess_mode=None, img2img=None)

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
    view_side = max(max(image.shape[:2]) for image in images)
    targets = texture_targets(objects, args.uv, args.texture_size, shared=True, view_side=view_side)
    views = [see(scene, camera, targets, image.shape[1], image.shape[0]) for camera, image in zip(cameras, images)]
    baked = bake(targets, views, images, _fusion(args))[0]
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    print(save_texture(baked, out))
    show_on_objects(baked, out)
    seconds = {"blender": round(time.monotonic() - started, 3), "server": 0.0}
    print(write_report(report_path(out), report_entries(baked, out), views=[camera.name for camera in cameras],
                       fusion=dataclasses.asdict(_fusion(args)), seconds=seconds))
    _print_summary(baked)
    return save_blend(args)


def _print_summary(baked):
    measured = [value for value in baked.agreement if value is not None]
    agreement = f", view agreement {sum(measured) / len(measured):.2f}/255" if measured else ""
    print(f"{', '.join(baked.target.names)}: coverage {baked.coverage:.1%} in UV map '{baked.target.uv_name}'{agreement}")


def _fix_seed(settings):
    """Every view gets one seed: the scene's, or a random one chosen now."""
    if settings.use_random_seed:
        settings.use_random_seed, settings.seed = False, secrets.randbelow(2**31)


def run_texture(args):
    started = time.monotonic()
    scene = open_scene(args)
    apply_arguments(scene, args)
    settings = scene.sd_blender
    # Each view one image, from its passes (not the colour render, not a tile: Apply as is the panel's).
    settings.num_images, settings.use_color_init, settings.apply_to = 1, False, "NONE"
    _fix_seed(settings)
    ask_for_previews(settings, args.previews)
    objects = _objects(args.objects)
    client = ServerClient(args.server, args.token)
    limits = server_limits(client)
    out = os.path.abspath(args.out) if args.out else output_directory()
    os.makedirs(out, exist_ok=True)
    stem = scene_file_stem(scene)
    texture_generation.clear_views(out, stem)
    width, height = generation_size(scene)
    targets = texture_targets(objects, args.uv, args.texture_size, shared=False, view_side=max(width, height))
    jobs = texture_generation.ViewJobs(
        start=lambda body, job_stem, route: GenerationJob(
            client, body, out, job_stem, seed_in_name=False, how_to_retry=HOW_TO_RETRY, route=route).start(),
        wait=functools.partial(wait_with_progress, previews=args.previews), out=out,
    )
    with temporary_cameras(scene) as make:
        cameras, views = placed_views(make, scene, args.strategy, args.views, args.cameras, objects, targets, width,
                                      height)
        print(f"{len(cameras)} views ({args.strategy}), mode {args.mode}, seed {settings.seed}", flush=True)
        fusion = _fusion(args)
        run = texture_generation.TextureRun(scene, targets, limits, jobs, stem, fusion)
        images = run.generate(args.mode, cameras, views)
        fill_view = run.fill_view(make, objects, cameras, views, images, width, height)
        all_baked = bake(targets, views, images, fusion)
        entries = {}
        for baked in all_baked:
            path = os.path.join(out, f"{stem}_{baked.target.names[0]}_texture.png")
            print(save_texture(baked, path))
            show_on_objects(baked, path)
            entries.update(report_entries(baked, path))
            _print_summary(baked)
        camera_names = [camera.name for camera in cameras]
    seconds = {"blender": round(time.monotonic() - started - jobs.server_seconds, 3),
               "server": round(jobs.server_seconds, 3)}
    print(write_report(os.path.join(out, f"{stem}_texture_report.json"), entries, views=camera_names,
                       mode=args.mode, strategy=args.strategy, seed=settings.seed, fill_view=fill_view, masks=jobs.masks,
                       fusion=dataclasses.asdict(fusion), seconds=seconds))
    return save_blend(args)
