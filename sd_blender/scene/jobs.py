"""A generation job for the scene: its request sent from a worker thread, its results named
after the .blend and the scene, in a folder next to the .blend."""
import os
import tempfile
import time

import bpy

from ..core.job import PANEL_RETRY, GenerationJob
from .request import prepare_request


def output_directory():
    """Results go next to the .blend, in a folder "sd_blender"; a temp folder for an unsaved file."""
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), "sd_blender")
    return os.path.join(tempfile.gettempdir(), "sd_blender")


def scene_file_stem(scene):
    blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "untitled"
    return f"{blend}_{scene.name}"


def result_file_stem(scene):
    return f"{scene_file_stem(scene)}_{time.strftime('%Y%m%d-%H%M%S')}"


def frame_file_stem(scene, frame):
    """A frame's result is <blend>_<scene>_<frame>: the frame number last, as image sequences want."""
    return f"{scene_file_stem(scene)}_{frame:04d}"


def frame_paths(scene, frames, output_dir=None):
    """Where the results of `frames` go, in order."""
    folder = output_dir or output_directory()
    return [os.path.join(folder, frame_file_stem(scene, frame) + ".png") for frame in frames]


def start_job(scene, client, output_dir=None, frame=None, how_to_retry=PANEL_RETRY, limits=None):
    """Render passes now, then hand the network part to a worker thread; returns at once. A
    `frame`'s result is named after it (frame_file_stem), a still's after the time and seed.
    `how_to_retry` completes the messages of a lost job ("... then press Generate"); `limits`
    (the server's, when known) are checked before anything is rendered."""
    job_request = prepare_request(scene, limits)
    output_dir = output_dir or output_directory()
    if frame is None:
        return GenerationJob(client, job_request, output_dir, result_file_stem(scene), how_to_retry=how_to_retry).start()
    return GenerationJob(client, job_request, output_dir, frame_file_stem(scene, frame), seed_in_name=False,
                         how_to_retry=how_to_retry).start()
