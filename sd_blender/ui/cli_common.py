"""What the command line's commands share: opening the scene, the generation and pass options
that override the scene's settings, following a job, saving the .blend."""
import argparse
import os
import time

import bpy

from ..core.client import ServerError
from ..core.frame_batch import CANCEL_LINE
from ..core.preview_files import write_preview
from ..scene.passes import PASS_KINDS
from ..scene.saving import save_copy_whole

# generate option → scene setting it overrides (None leaves the scene's saved value).
SETTING_OPTIONS = ("prompt", "negative_prompt", "steps", "guidance_scale", "scheduler", "num_images")
HOW_TO_RETRY = "run the command again"
# What `passes --kinds` writes: the control images, and the motion pass (not a control image).
FILE_PASS_KINDS = (*PASS_KINDS, "motion")


def pass_kinds(text):
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in FILE_PASS_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown pass {', '.join(unknown)}; available: {', '.join(FILE_PASS_KINDS)}")
    return kinds


def _control_unit(text):
    """KIND[:WEIGHT[:START[:END]]] → (kind, weight, start, end)."""
    kind, *numbers = text.split(":")
    if kind not in PASS_KINDS or len(numbers) > 3:
        raise ValueError
    weight, start, end = [float(number) for number in numbers] + [1.0, 0.0, 1.0][len(numbers):]
    return kind, weight, start, end


def control_units(text):
    if text.strip() == "none":
        return []
    try:
        return [_control_unit(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected KIND[:WEIGHT[:START[:END]]],... with KIND one of {', '.join(PASS_KINDS)}, got '{text}'"
        ) from None


def depth_range_option(text):
    if text in ("auto", "shot"):
        return text
    try:
        near, far = (float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, shot or NEAR,FAR (e.g. 2,40), got '{text}'") from None
    return near, far


def add_pass_arguments(parser):
    parser.add_argument("--depth-range", type=depth_range_option,
                        help="auto (per frame), shot (over the scene's frame range) or NEAR,FAR "
                        "(default: the scene's setting)")
    parser.add_argument("--canny-threshold", type=float, help="canny line threshold (default: the scene's setting)")
    parser.add_argument("--stick-scale", type=float, help="OpenPose stick thickness (default: the scene's setting)")


def open_scene(args):
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


def apply_pass_arguments(settings, args):
    if args.depth_range in ("auto", "shot"):
        settings.depth_range_mode = args.depth_range.upper()
    elif args.depth_range is not None:
        settings.depth_range_mode = "FIXED"
        settings.depth_near, settings.depth_far = args.depth_range
    if args.canny_threshold is not None:
        settings.canny_threshold = args.canny_threshold
    if args.stick_scale is not None:
        settings.openpose_stick_scale = args.stick_scale


def replace_control_units(settings, units):
    settings.control_units.clear()
    for kind, weight, start, end in units:
        unit = settings.control_units.add()
        unit.kind, unit.weight, unit.start, unit.end = kind, weight, start, end


def apply_arguments(scene, args):
    settings = scene.sd_blender
    for option in SETTING_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            setattr(settings, option, value)
    if args.seed is not None:
        settings.use_random_seed, settings.seed = False, args.seed
    if args.size:
        settings.use_scene_resolution = False
        settings.width, settings.height = args.size
    if args.controls is not None:
        replace_control_units(settings, args.controls)
    if args.guess_mode:
        settings.guess_mode = True
    if args.img2img is not None:
        settings.use_color_init, settings.init_strength = True, args.img2img
    apply_pass_arguments(settings, args)


def add_previews_argument(parser):
    parser.add_argument("--previews", metavar="DIR",
                        help="write each live preview of a running job here as preview_<stem>_<step>.png "
                        "(default: no previews asked for)")


def add_cancel_argument(parser):
    parser.add_argument("--cancel-on-stdin", action="store_true",
                        help=f"stop as on Ctrl-C (the jobs cancelled on the server) when a line '{CANCEL_LINE}' "
                        "comes on standard input: how the panel's Cancel reaches its background process")


def ask_for_previews(settings, folder):
    """Previews are asked for only when --previews says where to write them; its folder is made."""
    settings.use_previews = folder is not None
    if folder is not None:
        os.makedirs(folder, exist_ok=True)


def wait_with_progress(job, previews=None):
    """Follow the job to its end, printing its progress; with `previews` (a folder), write each new
    preview there as it arrives. Returns the final snapshot."""
    shown, written = None, None
    try:
        while not (snapshot := job.snapshot()).finished:
            if snapshot.message != shown:
                print(f"  {snapshot.message or snapshot.state}", flush=True)
                shown = snapshot.message
            written = _write_new_preview(previews, job, snapshot.preview, written)
            time.sleep(0.2)
    except KeyboardInterrupt:
        job.cancel()
    snapshot = job.wait()
    _write_new_preview(previews, job, snapshot.preview, written)
    return snapshot


def _write_new_preview(folder, job, preview, written):
    """Write `preview` as <folder>/preview_<job's file stem>_<step>.png unless it is the one
    `written` already (or there is no folder or preview); returns the preview written last."""
    if folder is None or preview is None or preview is written:
        return written
    write_preview(folder, job.file_stem, preview)
    return preview


def save_blend(args):
    if args.save_blend:
        save_copy_whole(os.path.abspath(args.save_blend))
        print(args.save_blend)
    return 0


def server_limits(client):
    """The server's limits, so each request is checked before its passes render; None when the
    server cannot say (the job itself then reports why)."""
    try:
        return client.limits()
    except ServerError:
        return None
