"""Headless use: `python -m sd_blender ...` and `blender -b SCENE.blend -c sd_blender ...`.

    sd_blender passes   [SCENE.blend] [--frame N | --frames A-B] [--kinds depth,normal,openpose,...] [--out DIR]
    sd_blender generate [SCENE.blend] [--frame N | --frames A-B] [--prompt TEXT] [--controls depth:0.8,openpose] ...

docs/cli.md documents every option.
"""
import argparse
import json
import os
import re
import sys
import time

import bpy

from ..core.client import DEFAULT_SERVER_URL, ServerClient, ServerError
from ..core.files import clear_leftovers, write_whole
from ..core.job import DONE
from ..core.openpose import openpose_json
from ..core.png import is_whole_png, write_png
from ..scene.apply import apply_frames_as_background, apply_results
from ..scene.depth_range import measure_shot_if_needed, measured_shot_text
from ..scene.frame_range import frames_depth_advice
from ..scene.jobs import frame_paths, output_directory, start_job
from ..scene.passes import PASS_KINDS, PassError, render_control_images
from ..scene.pose import scene_people
from ..scene.request import generation_size, pass_options, request_pass_kinds
from ..scene.saving import save_copy_whole

# generate option → scene setting it overrides (None leaves the scene's saved value).
_SETTING_OPTIONS = ("prompt", "negative_prompt", "steps", "guidance_scale", "scheduler", "num_images")
HOW_TO_RETRY = "run the command again"


def _kinds(text):
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in PASS_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown pass {', '.join(unknown)}; available: {', '.join(PASS_KINDS)}")
    return kinds


def _control_unit(text):
    """KIND[:WEIGHT[:START[:END]]] → (kind, weight, start, end)."""
    kind, *numbers = text.split(":")
    if kind not in PASS_KINDS or len(numbers) > 3:
        raise ValueError
    weight, start, end = [float(number) for number in numbers] + [1.0, 0.0, 1.0][len(numbers):]
    return kind, weight, start, end


def _control_units(text):
    if text.strip() == "none":
        return []
    try:
        return [_control_unit(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected KIND[:WEIGHT[:START[:END]]],... with KIND one of {', '.join(PASS_KINDS)}, got '{text}'"
        ) from None


def _depth_range(text):
    if text in ("auto", "shot"):
        return text
    try:
        near, far = (float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, shot or NEAR,FAR (e.g. 2,40), got '{text}'") from None
    return near, far


def _apply_targets(text):
    targets = [target.strip() for target in text.split(",") if target.strip() and target.strip() != "none"]
    unknown = [target for target in targets if target not in ("background", "texture")]
    if unknown:
        raise argparse.ArgumentTypeError(f"cannot apply as {', '.join(unknown)}; use background, texture or none")
    return targets


def _frame_range(text):
    match = re.fullmatch(r"(-?\d+)-(-?\d+)", text.strip())
    if match is None or int(match[2]) < int(match[1]):
        raise argparse.ArgumentTypeError(f"expected START-END with START <= END (e.g. 1-48), got '{text}'")
    return range(int(match[1]), int(match[2]) + 1)


def _add_scene_arguments(parser):
    parser.add_argument("blend", nargs="?", help="the .blend to open (default: the file already open)")
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--frame", type=int, help="frame to render (default: the scene's current frame)")
    frames.add_argument("--frames", type=_frame_range, metavar="START-END", help="every frame of this range")
    parser.add_argument("--scene", help="scene name (default: the active scene)")


def _add_pass_arguments(parser):
    parser.add_argument("--depth-range", type=_depth_range,
                        help="auto (per frame), shot (over the scene's frame range) or NEAR,FAR "
                        "(default: the scene's setting)")
    parser.add_argument("--canny-threshold", type=float, help="canny line threshold (default: the scene's setting)")
    parser.add_argument("--stick-scale", type=float, help="OpenPose stick thickness (default: the scene's setting)")


def build_parser():
    parser = argparse.ArgumentParser(prog="sd_blender", description="sd_blender without the user interface")
    commands = parser.add_subparsers(dest="command", required=True)

    passes = commands.add_parser("passes", help="write the control images of a frame")
    _add_scene_arguments(passes)
    passes.add_argument("--kinds", type=_kinds, default=list(PASS_KINDS), help="comma-separated passes")
    passes.add_argument("--out", default=".", help="output folder (default: current folder)")
    _add_pass_arguments(passes)

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
    generate.add_argument("--controls", type=_control_units,
                          help="KIND[:WEIGHT[:START[:END]]],... or none: replaces the scene's control units")
    generate.add_argument("--guess-mode", action="store_true", default=None, help="ControlNet guess mode")
    generate.add_argument("--img2img", type=float, metavar="STRENGTH",
                          help="start from the colour pass, repainting this much of it (0-1)")
    _add_pass_arguments(generate)
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
        if not os.path.isfile(args.blend):
            raise ValueError(f"no .blend file at {args.blend}")
        try:
            bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.blend))
        except RuntimeError as error:
            raise ValueError(f"Blender cannot open {args.blend}: {str(error).strip()}") from None
    if args.scene and args.scene not in bpy.data.scenes:
        names = ", ".join(scene.name for scene in bpy.data.scenes)
        raise ValueError(f"there is no scene named '{args.scene}'; this file has: {names}")
    scene = bpy.data.scenes[args.scene] if args.scene else bpy.context.scene
    if args.frame is not None:
        scene.frame_set(args.frame)
    return scene


def _measure_shot_if_needed(scene, kinds):
    """The explicit step of a Shot depth range not yet measured over the scene's frame range."""
    if measure_shot_if_needed(scene, kinds, *generation_size(scene)):
        print(measured_shot_text(scene))


def _apply_pass_arguments(settings, args):
    if args.depth_range in ("auto", "shot"):
        settings.depth_range_mode = args.depth_range.upper()
    elif args.depth_range is not None:
        settings.depth_range_mode = "FIXED"
        settings.depth_near, settings.depth_far = args.depth_range
    if args.canny_threshold is not None:
        settings.canny_threshold = args.canny_threshold
    if args.stick_scale is not None:
        settings.openpose_stick_scale = args.stick_scale


def _write_openpose_json(scene, width, height, folder):
    path = os.path.join(folder, f"openpose_{scene.frame_current:04d}.json")
    keypoints = openpose_json(scene_people(scene, width, height), width, height)
    write_whole(path, json.dumps(keypoints, indent=1).encode("utf-8"))
    return path


def run_passes(args):
    scene = _open_scene(args)
    _apply_pass_arguments(scene.sd_blender, args)
    width, height = generation_size(scene)
    os.makedirs(args.out, exist_ok=True)
    clear_leftovers(args.out)
    _measure_shot_if_needed(scene, args.kinds)
    for frame in args.frames or [scene.frame_current]:
        scene.frame_set(frame)
        images = render_control_images(scene, args.kinds, width, height, pass_options(scene, args.kinds))
        for kind, pixels in images.items():
            path = os.path.join(args.out, f"{kind}_{frame:04d}.png")
            write_png(path, pixels)
            print(path)
        if "openpose" in args.kinds:
            print(_write_openpose_json(scene, width, height, args.out))
    return 0


def _replace_control_units(settings, units):
    settings.control_units.clear()
    for kind, weight, start, end in units:
        unit = settings.control_units.add()
        unit.kind, unit.weight, unit.start, unit.end = kind, weight, start, end


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
    if args.controls is not None:
        _replace_control_units(settings, args.controls)
    if args.guess_mode:
        settings.guess_mode = True
    if args.img2img is not None:
        settings.use_color_init, settings.init_strength = True, args.img2img
    _apply_pass_arguments(settings, args)


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


def _check_frames_arguments(settings, args):
    if settings.num_images != 1:
        raise ValueError("--frames makes one image a frame: leave --num-images out (or set it to 1)")
    if "texture" in args.apply:
        raise ValueError("--apply texture takes one image; with --frames use --apply background (an image sequence)")


def _generate_frames(scene, start, args):
    """One image a frame, all with one seed, named <blend>_<scene>_<frame>.png in the result folder.
    A frame whose file is there already is kept and skipped: a stopped batch goes on where it stopped."""
    settings = scene.sd_blender
    _check_frames_arguments(settings, args)
    settings.use_random_seed = False  # one seed for every frame
    print(f"frames {args.frames.start}-{args.frames.stop - 1}, seed {settings.seed} for every frame")
    advice = frames_depth_advice(settings)
    if advice:
        print(f"note: {advice} (--depth-range shot)")
    out = os.path.abspath(args.out) if args.out else output_directory()
    os.makedirs(out, exist_ok=True)
    for name in clear_leftovers(out):
        print(f"removed {name}, left half-written when an earlier run stopped")
    paths = frame_paths(scene, args.frames, out)
    for frame, path in zip(args.frames, paths):
        if is_whole_png(path):
            print(f"frame {frame}: done already, kept {path}")
            continue
        if os.path.exists(path):
            os.remove(path)
            print(f"frame {frame}: {path} was cut off (an earlier run stopped while writing it); generating it again")
        scene.frame_set(frame)
        print(f"frame {frame}:", flush=True)
        snapshot = _wait_with_progress(start(out, frame=frame))
        if snapshot.state != DONE:
            print(f"sd_blender: frame {frame}: {snapshot.message}\nstopped at frame {frame}; the frames before "
                  "it are kept: run the same command again to go on from there", file=sys.stderr)
            return 1
        print(path)
    if "background" in args.apply:
        apply_frames_as_background(scene, paths, args.frames.start)
    return _save_blend(args)


def _save_blend(args):
    if args.save_blend:
        save_copy_whole(os.path.abspath(args.save_blend))
        print(args.save_blend)
    return 0


def _server_limits(client):
    """The server's limits, so each request is checked before its passes render; None when the
    server cannot say (the job itself then reports why)."""
    try:
        return client.limits()
    except ServerError:
        return None


def run_generate(args):
    scene = _open_scene(args)
    _apply_arguments(scene, args)
    _measure_shot_if_needed(scene, request_pass_kinds(scene.sd_blender))
    client = ServerClient(args.server, args.token)
    limits = _server_limits(client)

    def start(output_dir, frame=None):
        return start_job(scene, client, output_dir, frame=frame, how_to_retry=HOW_TO_RETRY, limits=limits)

    if args.frames:
        return _generate_frames(scene, start, args)
    snapshot = _wait_with_progress(start(args.out and os.path.abspath(args.out)))
    print(snapshot.message)
    if snapshot.state != DONE:
        return 1
    for path in snapshot.result_paths:
        print(path)
    names = args.objects.split(",") if args.objects else [o.name for o in scene.objects if o.select_get()]
    for target in args.apply:
        apply_results(scene, snapshot.result_paths, target.upper(), names)
    return _save_blend(args)


def run(argv):
    """Entry point of both command lines; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return {"passes": run_passes, "generate": run_generate}[args.command](args)
    except (PassError, ValueError, OSError) as error:
        print(f"sd_blender: error: {error}", file=sys.stderr)
        return 1
