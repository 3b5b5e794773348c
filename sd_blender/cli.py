"""Headless use: `python -m sd_blender ...` and `blender -b SCENE.blend -c sd_blender ...`.

    sd_blender passes   [SCENE.blend] [--frame N] [--kinds depth] [--out DIR]
    sd_blender generate [SCENE.blend] [--frame N] [--prompt TEXT] ... [--apply background|texture]

docs/cli.md documents every option.
"""
import argparse
import os
import sys
import time

import bpy

from . import generation
from .core.client import DEFAULT_SERVER_URL, ServerClient
from .core.job import DONE
from .core.png import write_png
from .passes import PASS_KINDS, PassError, render_control_images
from .properties import generation_size

# generate option → scene setting it overrides (None leaves the scene's saved value).
_SETTING_OPTIONS = ("prompt", "negative_prompt", "steps", "guidance_scale", "scheduler", "num_images")


def _kinds(text):
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in PASS_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown pass {', '.join(unknown)}; available: {', '.join(PASS_KINDS)}")
    return kinds


def _apply_targets(text):
    targets = [target.strip() for target in text.split(",") if target.strip() and target.strip() != "none"]
    unknown = [target for target in targets if target not in ("background", "texture")]
    if unknown:
        raise argparse.ArgumentTypeError(f"cannot apply as {', '.join(unknown)}; use background, texture or none")
    return targets


def _add_scene_arguments(parser):
    parser.add_argument("blend", nargs="?", help="the .blend to open (default: the file already open)")
    parser.add_argument("--frame", type=int, help="frame to render (default: the scene's current frame)")
    parser.add_argument("--scene", help="scene name (default: the active scene)")


def build_parser():
    parser = argparse.ArgumentParser(prog="sd_blender", description="sd_blender without the user interface")
    commands = parser.add_subparsers(dest="command", required=True)

    passes = commands.add_parser("passes", help="write the control images of a frame")
    _add_scene_arguments(passes)
    passes.add_argument("--kinds", type=_kinds, default=list(PASS_KINDS), help="comma-separated passes")
    passes.add_argument("--out", default=".", help="output folder (default: current folder)")

    generate = commands.add_parser("generate", help="render the passes, generate on the server, write the result")
    _add_scene_arguments(generate)
    generate.add_argument("--prompt")
    generate.add_argument("--negative-prompt")
    generate.add_argument("--seed", type=int, help="default: the scene's seed setting (random unless fixed)")
    generate.add_argument("--steps", type=int)
    generate.add_argument("--guidance-scale", type=float)
    generate.add_argument("--scheduler")
    generate.add_argument("--num-images", type=int)
    generate.add_argument("--size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                          help="default: the scene's render resolution")
    generate.add_argument("--no-depth", action="store_true", help="generate without the depth ControlNet")
    generate.add_argument("--server", default=os.environ.get("SD_BLENDER_SERVER_URL", DEFAULT_SERVER_URL))
    generate.add_argument("--token", default=os.environ.get("SD_BLENDER_TOKEN", ""))
    generate.add_argument("--out", help="result folder (default: 'sd_blender' next to the .blend)")
    generate.add_argument("--apply", type=_apply_targets, default=[],
                          help="comma-separated: background, texture (default: apply nothing)")
    generate.add_argument("--objects", help="comma-separated meshes for --apply texture (default: selected)")
    generate.add_argument("--save-blend", help="save the .blend with the applied result here")
    return parser


def _open_scene(args):
    if args.blend:
        bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.blend))
    scene = bpy.data.scenes[args.scene] if args.scene else bpy.context.scene
    if args.frame is not None:
        scene.frame_set(args.frame)
    return scene


def run_passes(args):
    scene = _open_scene(args)
    width, height = generation_size(scene)
    os.makedirs(args.out, exist_ok=True)
    for kind, pixels in render_control_images(scene, args.kinds, width, height).items():
        path = os.path.join(args.out, f"{kind}_{scene.frame_current:04d}.png")
        write_png(path, pixels)
        print(path)
    return 0


def _apply_arguments(scene, args):
    settings = scene.sd_blender
    for option in _SETTING_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            setattr(settings, option, value)
    if args.seed is not None:
        settings.use_random_seed, settings.seed = False, args.seed
    if args.size:
        settings.use_scene_resolution = False
        settings.width, settings.height = args.size
    if args.no_depth:
        settings.use_depth = False


def _wait_with_progress(job):
    shown = None
    try:
        while not (snapshot := job.snapshot()).finished:
            if snapshot.message != shown:
                print(f"  {snapshot.message or snapshot.state}", flush=True)
                shown = snapshot.message
            time.sleep(0.2)
    except KeyboardInterrupt:
        job.cancel()
    return job.wait()


def run_generate(args):
    scene = _open_scene(args)
    _apply_arguments(scene, args)
    job = generation.start_job(scene, ServerClient(args.server, args.token), args.out and os.path.abspath(args.out))
    snapshot = _wait_with_progress(job)
    print(snapshot.message)
    if snapshot.state != DONE:
        return 1
    for path in snapshot.result_paths:
        print(path)
    names = args.objects.split(",") if args.objects else [o.name for o in scene.objects if o.select_get()]
    for target in args.apply:
        generation.apply_results(scene, snapshot.result_paths, target.upper(), names)
    if args.save_blend:
        bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args.save_blend))
        print(args.save_blend)
    return 0


def run(argv):
    """Entry point of both command lines; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return {"passes": run_passes, "generate": run_generate}[args.command](args)
    except (PassError, ValueError) as error:
        print(f"sd_blender: error: {error}", file=sys.stderr)
        return 1
