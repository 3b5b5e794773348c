"""Live previews in Blender: while Generate's job runs on the live tiny-model server, its timer
puts each new preview into the image "SD Preview" and the panel draws it; the command line writes
them to a folder with --previews, and so do the background processes of Generate Frames and
Generate Texture, whose timers show them the same way. Waits on the work's states (a preview there,
a newer one), never on time: each job is long enough to show several previews and is cancelled
once they were seen."""
import json
import os
import re
import subprocess
import sys

import bpy
import numpy as np
from PIL import Image

from conftest import REPO_ROOT
from sd_blender.scene.request import prepare_request
from sd_blender.ui import frames, operators, panels, state, texture
from stand_in_layout import draw
from timers import run_timer_until_done
from waiting import wait_for

LONG_STEPS = 150  # steps of a job that runs while the test watches its previews (one every 3)


def long_job_settings(scene):
    settings = scene.sd_blender
    settings.use_scene_resolution = False
    settings.width, settings.height, settings.steps = 256, 256, LONG_STEPS


def next_preview(work, after=None):
    """The first preview of the work (a job, a background batch), or the first one newer than
    `after`, once its worker fetched it (or its watcher read it)."""
    def new(preview):
        return preview is not None and preview is not after

    wait_for(lambda: new(work.snapshot().preview) or work.snapshot().finished, "a new preview")
    assert new(work.snapshot().preview), work.snapshot().message  # the work ended before one came
    return work.snapshot().preview


def image_rgb(image):
    """An image's pixels as 8-bit RGB, top row first (as a PNG's)."""
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return np.round(pixels.reshape(height, width, 4)[::-1, :, :3] * 255).astype(np.uint8)


def test_the_timer_shows_each_new_preview_in_sd_preview_and_the_panel_draws_it(saved_scene):
    long_job_settings(saved_scene)
    assert bpy.ops.sd_blender.generate() == {"FINISHED"}
    job = state.generation.active.job

    first = next_preview(job)
    assert operators.poll_generation() is not None  # the timer goes on: the job runs
    image = bpy.data.images["SD Preview"]
    assert tuple(image.size) == (first.pixels.shape[1], first.pixels.shape[0])
    assert max(image.size) <= 256
    assert np.array_equal(image_rgb(image), first.pixels[:, :, :3])
    assert ("icon", image.preview.icon_id) in draw(panels.SDBLENDER_PT_generate)

    second = next_preview(job, after=first)
    assert second.step > first.step
    operators.poll_generation()
    assert np.array_equal(image_rgb(image), second.pixels[:, :, :3])
    assert not np.array_equal(second.pixels, first.pixels)  # the image forms

    bpy.ops.sd_blender.cancel()
    assert run_timer_until_done().job.snapshot().state == "cancelled"


def shown_by_a_tick(batch, poll):
    """One tick of the batch's timer (`poll`) and the preview it showed: the batch's thread reads
    newer ones meanwhile, so a tick counts when the newest was the same before and after it."""
    while True:
        before = batch.snapshot().preview
        assert poll() is not None  # the timer goes on: the batch runs
        if batch.snapshot().preview is before:
            return before


def assert_the_timer_shows_the_previews(batch, poll, panel):
    """While the background batch runs, its timer (`poll`) puts its newest previews into
    "SD Preview" and `panel` draws it; returns the folder the batch's previews were in."""
    next_preview(batch)
    first = shown_by_a_tick(batch, poll)
    image = bpy.data.images["SD Preview"]
    assert np.array_equal(image_rgb(image), first.pixels[:, :, :3])
    assert ("icon", image.preview.icon_id) in draw(panel)
    next_preview(batch, after=first)
    second = shown_by_a_tick(batch, poll)
    assert second.step > first.step and np.array_equal(image_rgb(image), second.pixels[:, :, :3])
    return batch.temporary_folder


def test_generate_frames_shows_the_background_jobs_previews(saved_scene):
    long_job_settings(saved_scene)
    saved_scene.frame_start = saved_scene.frame_end = 1
    assert bpy.ops.sd_blender.generate_frames() == {"FINISHED"}
    batch = state.frame_batch.active.batch
    folder = assert_the_timer_shows_the_previews(batch, frames.poll_frames, panels.SDBLENDER_PT_generate)
    bpy.ops.sd_blender.cancel_frames()
    wait_for(lambda: frames.poll_frames() is None, "the frames stopped")
    assert batch.snapshot().state == "cancelled" and not os.path.exists(folder)  # previews gone with the copy


def test_generate_texture_shows_the_background_jobs_previews(saved_scene):
    long_job_settings(saved_scene)
    saved_scene.sd_blender.texture_views, saved_scene.sd_blender.texture_size = 2, "512"
    bpy.data.objects["Sphere"].select_set(True)
    assert bpy.ops.sd_blender.generate_texture() == {"FINISHED"}
    batch = state.texture_batch.active.batch
    folder = assert_the_timer_shows_the_previews(batch, texture.poll_texture, panels.SDBLENDER_PT_texture)
    bpy.ops.sd_blender.cancel_texture()
    wait_for(lambda: texture.poll_texture() is None, "the texture stopped")
    assert batch.snapshot().state == "cancelled" and not os.path.exists(folder)


def test_previews_off_asks_the_server_for_none(saved_scene):
    assert prepare_request(saved_scene)["preview_every"] == 3
    saved_scene.sd_blender.use_previews = False
    assert prepare_request(saved_scene)["preview_every"] == 0
    bpy.ops.sd_blender.generate()
    snapshot = run_timer_until_done().job.snapshot()
    assert snapshot.state == "done", snapshot.message
    assert snapshot.preview is None and "SD Preview" not in bpy.data.images


def test_generate_frames_with_previews_off_asks_the_server_for_none(saved_scene, tmp_path):
    saved_scene.sd_blender.use_previews = False
    saved_scene.frame_start = saved_scene.frame_end = 1
    assert bpy.ops.sd_blender.generate_frames() == {"FINISHED"}
    batch = state.frame_batch.active.batch
    wait_for(lambda: frames.poll_frames() is None, "the frames done")
    assert batch.snapshot().state == "done", batch.snapshot().message
    with Image.open(batch.frame_paths[0]) as frame:
        assert json.loads(frame.text["sd_blender"])["preview_every"] == 0
    assert "SD Preview" not in bpy.data.images


def generate_with_previews(tmp_path, server, *arguments):
    """Runs `generate` with 60 steps at 256² and --previews; returns the previews folder's files."""
    previews = tmp_path / "previews"
    completed = subprocess.run(
        [sys.executable, "-m", "sd_blender", "generate", str(tmp_path / "shot.blend"), "--server", server,
         "--seed", "3", "--steps", "60", "--size", "256", "256", "--out", str(tmp_path / "results"),
         "--previews", str(previews), *arguments],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    written = sorted(previews.iterdir())
    assert written, completed.stdout[-3000:]
    return written


def assert_previews_of(written, stem):
    for path in written:
        match = re.fullmatch(rf"preview_{re.escape(stem)}_(\d+)\.png", path.name)
        assert match and int(match[1]) % 3 == 0 and 0 < int(match[1]) < 60, path.name
        with Image.open(path) as png:
            assert max(png.size) <= 256


def test_the_command_line_writes_each_preview_to_the_folder(saved_scene, tmp_path, server):
    written = generate_with_previews(tmp_path, server)
    (result,) = (tmp_path / "results").glob("*.png")
    assert_previews_of(written, result.name.removesuffix("_3.png"))


def test_the_previews_of_a_frame_are_named_after_it(saved_scene, tmp_path, server):
    written = generate_with_previews(tmp_path, server, "--frames", "2-2", "--temporal", "off")
    assert_previews_of(written, "shot_Scene_0002")
