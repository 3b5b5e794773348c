"""Generate Frames from the panel: a background process (here `python -m sd_blender`, as Blender
runs as a Python module; a Blender binary runs `blender -b -c sd_blender generate COPY.blend ...`)
generates the frame range against the live tiny-model server while Blender stays free."""
import json
import os
import signal

import bpy
import pytest

from live_server import JOB_AHEAD
from sd_blender.core import frame_batch
from sd_blender.ui import state
from sd_blender.core.client import ServerClient
from timers import run_frames_timer_until_done
from waiting import wait_for


@pytest.fixture
def frame_range(saved_scene):
    saved_scene.sd_blender.steps = 2
    saved_scene.sd_blender.apply_to = "BACKGROUND"
    saved_scene.frame_start = 1
    return saved_scene


def test_generate_frames_returns_at_once_and_shows_the_frames_as_a_sequence(frame_range, tmp_path):
    frame_range.frame_end = 2
    assert bpy.ops.sd_blender.generate_frames() == {"FINISHED"}
    assert not state.frame_batch.active.batch.finished  # it returned without waiting for the frames
    assert not bpy.ops.sd_blender.generate_frames.poll()  # one batch at a time
    copy_folder = state.frame_batch.active.batch.temporary_folder
    assert os.path.isfile(os.path.join(copy_folder, "shot.blend"))  # the file as it is now, for the background process
    active = run_frames_timer_until_done()
    snapshot = active.batch.snapshot()
    assert snapshot.state == "done", snapshot.message
    assert (snapshot.frames_done, snapshot.fraction) == (2, 1.0)
    assert not os.path.exists(copy_folder)  # removed once the process ended
    names = [os.path.basename(path) for path in active.batch.frame_paths]
    assert names == ["shot_Scene_0001.png", "shot_Scene_0002.png"]
    assert all(os.path.dirname(path) == str(tmp_path / "sd_blender") and os.path.isfile(path) for path in active.batch.frame_paths)
    report = json.loads((tmp_path / "sd_blender" / "frames_report.json").read_text())
    assert report["temporal"] == "full" and [pair["frame"] for pair in report["pairs"]] == [2]
    assert active.outcome == (f"done: 2 frame(s) in {tmp_path / 'sd_blender'}; mean warping error "
                              f"{report['mean_warping_error']:.2f}, control images "
                              f"{report['mean_control_warping_error']:.2f} (frames_report.png); "
                              "shown behind the camera view as an image sequence")
    (background,) = frame_range.camera.data.background_images
    assert background.image.source == 'SEQUENCE'
    assert (background.image_user.frame_start, background.image_user.frame_duration) == (1, 2)


def test_cancelled_frames_keep_what_is_done_and_generating_again_goes_on(frame_range, server):
    frame_range.frame_end = 1
    frame_range.sd_blender.temporal_mode = "WARP"  # the panel's Animation choice reaches the background process
    assert bpy.ops.sd_blender.generate_frames() == {"FINISHED"}
    (first,) = run_frames_timer_until_done().batch.frame_paths
    first_written = os.stat(first).st_mtime_ns

    frame_range.frame_end = 3
    client = ServerClient(server)
    # Holds frame 2 queued (the longest job the server takes), cancelled once frame 2 is.
    ahead = client.submit(JOB_AHEAD)
    assert bpy.ops.sd_blender.generate_frames() == {"FINISHED"}
    batch = state.frame_batch.active.batch
    wait_for(lambda: "queued on the server" in batch.snapshot().message, "frame 2 queued")
    assert batch.snapshot().message.startswith("frame 2 of 3")
    assert bpy.ops.sd_blender.cancel_frames() == {"FINISHED"}
    active = run_frames_timer_until_done()
    client.cancel(ahead)
    snapshot = active.batch.snapshot()
    assert snapshot.state == "cancelled"
    assert active.outcome == "cancelled: 1 of 3 frames done and kept; generating the frames again goes on from there"

    assert bpy.ops.sd_blender.generate_frames() == {"FINISHED"}
    active = run_frames_timer_until_done()
    assert active.batch.snapshot().state == "done", active.batch.snapshot().message
    assert all(os.path.isfile(path) for path in active.batch.frame_paths) and len(active.batch.frame_paths) == 3
    assert os.stat(first).st_mtime_ns == first_written  # kept, not generated again
    report = json.loads(open(os.path.join(os.path.dirname(first), "frames_report.json")).read())
    assert report["temporal"] == "warp" and report["warp_strength"] == 0.5


def test_cancel_reaches_a_process_started_with_ctrl_c_ignored(frame_range, server, monkeypatch):
    """Blender started as a shell's background job (`blender &`) ignores SIGINT, and so would the
    processes it starts: the command line takes Ctrl-C back, so Cancel still cancels the frame on
    the server (not the process terminated after the grace time, here never)."""
    monkeypatch.setattr(frame_batch, "CANCEL_GRACE_SECONDS", 24 * 3600.0)
    frame_range.frame_end = 1
    client = ServerClient(server)
    ahead = client.submit(JOB_AHEAD)
    ignored_before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert bpy.ops.sd_blender.generate_frames() == {"FINISHED"}
    finally:
        signal.signal(signal.SIGINT, ignored_before)
    batch = state.frame_batch.active.batch
    wait_for(lambda: "queued on the server" in batch.snapshot().message, "frame 1 queued")
    assert bpy.ops.sd_blender.cancel_frames() == {"FINISHED"}
    active = run_frames_timer_until_done()
    client.cancel(ahead)  # still running: the frame was cancelled while queued behind it, not run
    assert active.outcome == "cancelled: 0 of 1 frames done and kept; generating the frames again goes on from there"


def test_frames_that_cannot_be_generated_say_what_to_fix(frame_range):
    frame_range.sd_blender.num_images = 2
    with pytest.raises(RuntimeError, match="Generate Frames makes one image a frame: set Images to 1"):
        bpy.ops.sd_blender.generate_frames()


def test_an_unreachable_server_stops_the_frames_with_the_reason(frame_range, addon):
    frame_range.frame_end = 2
    addon.server_url = "http://127.0.0.1:9"
    assert bpy.ops.sd_blender.generate_frames() == {"FINISHED"}
    active = run_frames_timer_until_done()
    assert active.batch.snapshot().state == "failed"
    assert active.outcome.startswith("frame 1: cannot reach the sd_blender server at http://127.0.0.1:9")
    assert active.outcome.endswith("0 of 2 frames done and kept; generating the frames again goes on from there")
