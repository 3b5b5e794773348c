"""Headless use: `python -m sd_blender ...` and `blender -b SCENE.blend -c sd_blender ...`.

    sd_blender passes   [SCENE.blend] [--frame N | --frames A-B] [--kinds depth,normal,openpose,motion,...] [--out DIR]
    sd_blender generate [SCENE.blend] [--frame N | --frames A-B] [--prompt TEXT] [--controls depth:0.8,openpose] ...
    sd_blender texture | bake ...   (ui/cli_texture.py)

docs/cli.md documents every option.
"""
import argparse
import functools
import json
import os
import re
import signal
import sys

from ..core.client import DEFAULT_SERVER_URL, ServerClient
from ..core.files import clear_leftovers, write_whole
from ..core.frame_batch import listen_for_cancel
from ..core.job import DONE
from ..core.openpose import openpose_json
from ..core.png import is_whole_png, write_png
from ..core.temporal import TEMPORAL_MODES
from ..scene.apply import apply_frames_as_background, apply_results
from ..scene.depth_range import measure_shot_if_needed, measured_shot_text
from ..scene.motion import MotionFrames, write_motion_files
from ..scene.frame_range import frames_depth_advice
from ..scene.jobs import frame_paths, output_directory, start_job
from ..scene.passes import PASS_KINDS, PassError, render_control_images
from ..scene.pose import scene_people
from ..scene.request import generation_size, pass_options, request_pass_kinds
from ..scene.temporal import FramesRun, FramesStopped, TemporalOptions
from . import cli_texture
from .cli_common import (
    HOW_TO_RETRY, add_cancel_argument, add_pass_arguments, add_previews_argument, apply_arguments,
    apply_pass_arguments, ask_for_previews, control_units, open_scene, pass_kinds, save_blend, server_limits,
    wait_with_progress,
)


def _apply_targets(text):
    targets = [target.strip() for target in text.split(",") if target.strip() and target.strip() != "none"]
    unknown = [target for target in targets if target not in ("background", "texture", "material")]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"cannot apply as {', '.join(unknown)}; use background, texture, material or none")
    if "material" in targets and len(targets) > 1:
        raise argparse.ArgumentTypeError("--apply material makes a tileable image without the scene's passes: "
                                         "apply it alone")
    return targets


def _frame_range(text):
    match = re.fullmatch(r"(-?\d+)-(-?\d+)", text.strip())
    if match is None or int(match[2]) < int(match[1]):
        raise argparse.ArgumentTypeError(f"expected START-END with START <= END (e.g. 1-48), got '{text}'")
    return range(int(match[1]), int(match[2]) + 1)


def _keyframe_interval(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 0 (the first frame anchors all) or a whole number of frames, got '{text}'")
    return int(text)


def _warp_strength(text):
    try:
        strength = float(text)
    except ValueError:
        strength = None
    if strength is None or not 0.05 <= strength <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a strength from 0.05 to 1, got '{text}'")
    return strength


def _add_scene_arguments(parser):
    parser.add_argument("blend", nargs="?", help="the .blend to open (default: the file already open)")
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--frame", type=int, help="frame to render (default: the scene's current frame)")
    frames.add_argument("--frames", type=_frame_range, metavar="START-END", help="every frame of this range")
    parser.add_argument("--scene", help="scene name (default: the active scene)")


def build_parser():
    parser = argparse.ArgumentParser(prog="sd_blender", description="sd_blender without the user interface")
    commands = parser.add_subparsers(dest="command", required=True)

    passes = commands.add_parser("passes", help="write the control images of a frame")
    _add_scene_arguments(passes)
    passes.add_argument("--kinds", type=pass_kinds, default=list(PASS_KINDS),
                        help="comma-separated passes (default: every control image; motion on request)")
    passes.add_argument("--out", default=".", help="output folder (default: current folder)")
    add_pass_arguments(passes)

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
    generate.add_argument("--controls", type=control_units,
                          help="KIND[:WEIGHT[:START[:END]]],... or none: replaces the scene's control units")
    generate.add_argument("--guess-mode", action="store_true", default=None, help="ControlNet guess mode")
    generate.add_argument("--img2img", type=float, metavar="STRENGTH",
                          help="start from the colour pass, repainting this much of it (0-1)")
    add_pass_arguments(generate)
    generate.add_argument("--server", default=os.environ.get("SD_BLENDER_SERVER_URL", DEFAULT_SERVER_URL))
    generate.add_argument("--token", default=os.environ.get("SD_BLENDER_TOKEN", ""))
    generate.add_argument("--out", help="result folder (default: 'sd_blender' next to the .blend)")
    generate.add_argument("--apply", type=_apply_targets, default=[],
                          help="comma-separated: background, texture; or material (a seamless tile on the "
                          "selected meshes' materials, generated without passes) (default: apply nothing)")
    generate.add_argument("--objects", help="comma-separated meshes for --apply texture (default: selected)")
    generate.add_argument("--temporal", choices=TEMPORAL_MODES,
                          help="with --frames: how frames follow each other (default: the scene's setting, full)")
    generate.add_argument("--anchor-every", type=_keyframe_interval, metavar="K",
                          help="anchor, full (and warp's --match-colors): a keyframe every K frames "
                          "(0: the first frame anchors all)")
    generate.add_argument("--warp-strength", type=_warp_strength, metavar="STRENGTH",
                          help="warp and full: how much of the warped frame before is repainted (0-1, default 0.5)")
    generate.add_argument("--match-colors", action="store_true",
                          help="warp and full: move each frame's start to the anchor frame's colour statistics")
    generate.add_argument("--save-blend", help="save the .blend with the applied result here")
    add_previews_argument(generate)
    add_cancel_argument(generate)
    cli_texture.add_commands(commands)
    return parser


def _measure_shot_if_needed(scene, kinds):
    """The explicit step of a Shot depth range not yet measured over the scene's frame range."""
    if measure_shot_if_needed(scene, kinds, *generation_size(scene)):
        print(measured_shot_text(scene))


def _write_openpose_json(scene, width, height, folder):
    path = os.path.join(folder, f"openpose_{scene.frame_current:04d}.json")
    keypoints = openpose_json(scene_people(scene, width, height), width, height)
    write_whole(path, json.dumps(keypoints, indent=1).encode("utf-8"))
    return path


def run_passes(args):
    scene = open_scene(args)
    apply_pass_arguments(scene.sd_blender, args)
    width, height = generation_size(scene)
    os.makedirs(args.out, exist_ok=True)
    clear_leftovers(args.out)
    _measure_shot_if_needed(scene, args.kinds)
    kinds = [kind for kind in args.kinds if kind != "motion"]
    motion = MotionFrames(width, height)
    for frame in args.frames or [scene.frame_current]:
        scene.frame_set(frame)
        images = render_control_images(scene, kinds, width, height, pass_options(scene, kinds))
        for kind, pixels in images.items():
            path = os.path.join(args.out, f"{kind}_{frame:04d}.png")
            write_png(path, pixels)
            print(path)
        if "openpose" in kinds:
            print(_write_openpose_json(scene, width, height, args.out))
        if "motion" in args.kinds:
            print(*write_motion_files(scene, motion, args.out), sep="\n")
    return 0


def _check_frames_arguments(settings, args):
    if settings.num_images != 1:
        raise ValueError("--frames makes one image a frame: leave --num-images out (or set it to 1)")
    if "texture" in args.apply:
        raise ValueError("--apply texture takes one image; with --frames use --apply background (an image sequence)")


def _temporal_options(settings, args):
    """The temporal mode and its options: the command line's, else the scene's saved settings."""
    return TemporalOptions(
        mode=args.temporal or settings.temporal_mode.lower(),
        anchor_every=settings.temporal_anchor_every if args.anchor_every is None else args.anchor_every,
        warp_strength=settings.temporal_warp_strength if args.warp_strength is None else args.warp_strength,
        match_colours=args.match_colors or settings.temporal_match_colors,
    )


def _frames_to_make(paths, frames):
    """The frames without a whole file yet; a file cut off by an earlier run is removed."""
    todo = []
    for frame, path in zip(frames, paths):
        if is_whole_png(path):
            print(f"frame {frame}: done already, kept {path}")
            continue
        if os.path.exists(path):
            os.remove(path)
            print(f"frame {frame}: {path} was cut off (an earlier run stopped while writing it); generating it again")
        todo.append(frame)
    return todo


def _generate_frames(scene, client, limits, args):
    """One image a frame, all with one seed, named <blend>_<scene>_<frame>.png in the result folder,
    in the temporal mode asked for (scene.temporal). A frame whose file is there already is kept and
    skipped: a stopped batch goes on where it stopped. Then the temporal report."""
    settings = scene.sd_blender
    _check_frames_arguments(settings, args)
    settings.use_random_seed = False  # one seed for every frame
    options = _temporal_options(settings, args)
    print(f"frames {args.frames.start}-{args.frames.stop - 1}, seed {settings.seed} for every frame, "
          f"temporal mode {options.mode}")
    advice = frames_depth_advice(settings)
    if advice:
        print(f"note: {advice} (--depth-range shot)")
    out = os.path.abspath(args.out) if args.out else output_directory()
    os.makedirs(out, exist_ok=True)
    for name in clear_leftovers(out):
        print(f"removed {name}, left half-written when an earlier run stopped")
    paths = frame_paths(scene, args.frames, out)
    wait = functools.partial(wait_with_progress, previews=args.previews)
    run = FramesRun(scene, client, limits, out, args.frames, options, wait, HOW_TO_RETRY)
    try:
        run.run(_frames_to_make(paths, args.frames), lambda *lines: print(*lines, sep="\n", flush=True))
    except FramesStopped as stopped:
        print(f"sd_blender: {stopped}\nstopped at frame {stopped.frame}; the frames before it are kept: run the "
              "same command again to go on from there", file=sys.stderr)
        return 1
    written, summary = run.write_report()
    print(*written, *summary, sep="\n")
    if "background" in args.apply:
        apply_frames_as_background(scene, paths, args.frames.start)
    return save_blend(args)


def run_generate(args):
    scene = open_scene(args)
    apply_arguments(scene, args)
    # The command line's --apply decides, not the panel's saved choice: material asks for a tile.
    scene.sd_blender.apply_to = "MATERIAL" if "material" in args.apply else "NONE"
    ask_for_previews(scene.sd_blender, args.previews)
    _measure_shot_if_needed(scene, request_pass_kinds(scene.sd_blender))
    client = ServerClient(args.server, args.token)
    limits = server_limits(client)
    if args.frames:
        return _generate_frames(scene, client, limits, args)
    job = start_job(scene, client, args.out and os.path.abspath(args.out), how_to_retry=HOW_TO_RETRY, limits=limits)
    snapshot = wait_with_progress(job, args.previews)
    print(snapshot.message)
    if snapshot.state != DONE:
        return 1
    for path in snapshot.result_paths:
        print(path)
    names = args.objects.split(",") if args.objects else [o.name for o in scene.objects if o.select_get()]
    for target in args.apply:
        apply_results(scene, snapshot.result_paths, target.upper(), names)
    return save_blend(args)


def run(argv):
    """Entry point of both command lines; returns the exit status."""
    args = build_parser().parse_args(argv)
    # Ctrl-C, and the panel's Cancel (--cancel-on-stdin), cancel the jobs on the server through
    # KeyboardInterrupt. A process started with SIGINT ignored (a shell's background job, and all it
    # starts) or Blender's binary in the background (its handler only flags a break) never raises it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if getattr(args, "cancel_on_stdin", False):
        listen_for_cancel(sys.stdin)
    try:
        commands = {"passes": run_passes, "generate": run_generate, "bake": cli_texture.run_bake,
                    "texture": cli_texture.run_texture}
        return commands[args.command](args)
    except (PassError, ValueError, OSError) as error:  # TexturingError is a ValueError
        print(f"sd_blender: error: {error}", file=sys.stderr)
        return 1
