"""Headless Blender scene → passes → live tiny-model server on 127.0.0.1 → image applied.

The server is the real one (uvicorn, diffusers pipeline classes) running the `tiny` model:
seeded random weights stand in for the real ones, which cannot be downloaded here.
"""
import json
import os
import subprocess
import sys

import bpy
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from live_server import JOB_AHEAD
from scenes import sphere_and_wall_scene
from sd_blender.core.client import ServerClient
from sd_blender.ui import operators, state
from timers import run_timer_until_done
from waiting import wait_for


def test_generate_returns_at_once_and_applies_the_result_as_background(saved_scene, tmp_path, server):
    saved_scene.sd_blender.steps = 40
    saved_scene.sd_blender.apply_to = "BACKGROUND"
    client = ServerClient(server)
    # A long job ahead keeps the server busy, so the add-on's job is still waiting when the operator returns.
    ahead = client.submit(JOB_AHEAD)
    assert bpy.ops.sd_blender.generate() == {"FINISHED"}
    active = state.generation.active
    assert not active.job.snapshot().finished  # it returned without waiting for the server
    wait_for(lambda: active.job.snapshot().job_id is not None, "submitted")  # the submit runs in the job's thread
    assert client.job(active.job.snapshot().job_id)["state"] == "queued"
    client.cancel(ahead)

    active = run_timer_until_done()
    snapshot = active.job.snapshot()
    assert snapshot.state == "done", snapshot.message
    (path,) = snapshot.result_paths
    assert os.path.dirname(path) == str(tmp_path / "sd_blender")
    with Image.open(path) as png:
        assert png.size == (96, 64)
        assert json.loads(png.text["sd_blender"])["steps"] == 40
    camera = saved_scene.camera.data
    assert camera.show_background_images
    assert [bg.image.filepath for bg in camera.background_images] == [path]


def test_a_job_running_while_another_file_is_opened_is_saved_not_applied(saved_scene, tmp_path, server):
    saved_scene.sd_blender.apply_to = "BACKGROUND"
    other = tmp_path / "other.blend"  # the same scene and camera by name: the result must not land there
    bpy.ops.wm.save_as_mainfile(filepath=str(other), copy=True)
    client = ServerClient(server)
    ahead = client.submit(JOB_AHEAD)  # keeps the job waiting
    assert bpy.ops.sd_blender.generate() == {"FINISHED"}
    bpy.ops.wm.open_mainfile(filepath=str(other))
    client.cancel(ahead)

    assert bpy.app.timers.is_registered(operators.poll_generation), "the timer did not survive opening a file"
    active = run_timer_until_done()
    snapshot = active.job.snapshot()
    assert snapshot.state == "done", snapshot.message
    (path,) = snapshot.result_paths
    assert os.path.isfile(path) and os.path.dirname(path) == str(tmp_path / "sd_blender")
    assert active.outcome.endswith("not applied: another file was opened while it ran"), active.outcome
    assert not bpy.context.scene.camera.data.background_images


def test_stacked_units_guess_mode_and_img2img_reach_the_server(saved_scene):
    settings = saved_scene.sd_blender
    settings.control_units[0].model = "tiny"
    for kind, weight in (("normal", 0.5), ("openpose", 1.0), ("seg", 0.75)):
        bpy.ops.sd_blender.add_control_unit(kind=kind)
        settings.control_units[-1].weight = weight
    settings.guess_mode = True
    settings.use_color_init, settings.init_strength, settings.steps = True, 0.5, 6
    bpy.ops.sd_blender.generate()
    snapshot = run_timer_until_done().job.snapshot()
    assert snapshot.state == "done", snapshot.message
    parameters = snapshot.parameters
    assert [(control["type"], control["weight"]) for control in parameters["controls"]] == [
        ("depth", 1.0), ("normal", 0.5), ("openpose", 1.0), ("seg", 0.75)
    ]
    assert parameters["guess_mode"] is True and parameters["strength"] == 0.5
    assert (snapshot.step, snapshot.total) == (3, 3)  # img2img runs strength x steps


def test_a_disabled_unit_is_not_sent(saved_scene):
    bpy.ops.sd_blender.add_control_unit(kind="lineart")
    saved_scene.sd_blender.control_units[0].enabled = False
    bpy.ops.sd_blender.generate()
    snapshot = run_timer_until_done().job.snapshot()
    assert [control["type"] for control in snapshot.parameters["controls"]] == ["lineart"]


def test_cancel_stops_the_job_and_writes_nothing(saved_scene, tmp_path, server):
    client = ServerClient(server)
    ahead = client.submit(JOB_AHEAD)  # holds the job queued
    bpy.ops.sd_blender.generate()
    job = state.generation.active.job
    wait_for(lambda: job.snapshot().state == "queued", "the job queued on the server")
    assert bpy.ops.sd_blender.cancel() == {"FINISHED"}
    snapshot = run_timer_until_done().job.snapshot()
    client.cancel(ahead)
    assert snapshot.state == "cancelled"
    assert client.job(snapshot.job_id)["state"] == "cancelled"
    assert not (tmp_path / "sd_blender").exists()


def test_an_unreachable_server_is_reported(saved_scene, addon):
    addon.server_url = "http://127.0.0.1:9"  # discard port: nothing listens
    bpy.ops.sd_blender.generate()
    active = run_timer_until_done()
    assert active.job.snapshot().state == "failed"
    assert "cannot reach the sd_blender server at http://127.0.0.1:9" in active.outcome


def test_headless_generate_textures_the_mesh_and_saves_the_blend(saved_scene, tmp_path, server):
    applied = tmp_path / "applied.blend"
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "sd_blender", "generate", str(tmp_path / "shot.blend"), "--server", server,
         "--seed", "11", "--steps", "3", "--out", str(out), "--apply", "texture", "--objects", "Sphere",
         "--save-blend", str(applied)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (result,) = [path for path in out.iterdir() if path.suffix == ".png"]
    assert result.name.endswith("_11.png")
    assert Image.open(result).size == (96, 64)

    bpy.ops.wm.open_mainfile(filepath=str(applied))
    sphere = bpy.data.objects["Sphere"]
    assert "SD Projection" in sphere.data.uv_layers
    nodes = sphere.active_material.node_tree.nodes
    image_node, depth_node = nodes["SD Projection Image"], nodes["SD Projection Map Depth"]
    assert os.path.basename(image_node.image.filepath) == result.name
    assert depth_node.image.name == f"{image_node.image.name} depth" and depth_node.image.packed_file is not None
    base_color = next(node for node in nodes if node.type == "BSDF_PRINCIPLED").inputs["Base Color"]
    assert base_color.links[0].from_node == nodes["SD Projection Mix"]
    assert "SD Projection" not in bpy.data.objects["Wall"].data.uv_layers


def test_headless_passes_writes_every_pass_and_the_openpose_json(saved_scene, tmp_path):
    out = tmp_path / "passes"
    completed = subprocess.run(
        [sys.executable, "-m", "sd_blender", "passes", str(tmp_path / "shot.blend"), "--frame", "7",
         "--kinds", "depth,normal,openpose,lineart,seg,color", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [f"{kind}_0007.png" for kind in ("depth", "normal", "openpose", "lineart", "seg", "color")]
        + ["openpose_0007.json"]
    )
    depth = np.asarray(Image.open(out / "depth_0007.png"))
    assert depth.shape == (64, 96)
    assert depth[32, 48] == 255 and depth[2, 2] == 0
    assert tuple(np.asarray(Image.open(out / "normal_0007.png"))[2, 2]) == (128, 128, 255)  # background
    assert np.asarray(Image.open(out / "color_0007.png")).shape == (64, 96, 3)
    pose = json.loads((out / "openpose_0007.json").read_text())
    assert (pose["canvas_width"], pose["canvas_height"]) == (96, 64)
    (dancer,) = pose["people"]
    neck_x, neck_y, confidence = dancer["pose_keypoints_2d"][3:6]
    assert confidence == 1.0 and neck_x < 48  # the dancer stands left of the frame centre
    drawn = np.asarray(Image.open(out / "openpose_0007.png"))
    assert drawn[round(neck_y), round(neck_x)].any()  # the neck joint is drawn where the JSON says


def run_command_line(*arguments):
    return subprocess.run([sys.executable, "-m", "sd_blender", *arguments], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_headless_passes_of_a_frame_range_follow_the_animation(saved_scene, tmp_path):
    sphere = bpy.data.objects["Sphere"]
    for frame, x in ((1, -1.5), (3, 1.5)):
        sphere.location.x = x
        sphere.keyframe_insert("location", index=0, frame=frame)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "moving.blend"))
    out = tmp_path / "passes"
    completed = run_command_line("passes", str(tmp_path / "moving.blend"), "--frames", "1-3", "--kinds", "depth",
                                 "--depth-range", "2,20", "--out", str(out))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == ["depth_0001.png", "depth_0002.png", "depth_0003.png"]
    nearest_columns = [np.argmax(np.asarray(Image.open(out / f"depth_000{frame}.png")).max(axis=0)) for frame in (1, 2, 3)]
    assert nearest_columns[0] < nearest_columns[1] < nearest_columns[2]  # the sphere moves left to right


def test_headless_frames_resume_where_they_stopped_and_play_as_a_background(saved_scene, tmp_path, server):
    out = tmp_path / "frames"
    common = ["generate", str(tmp_path / "shot.blend"), "--steps", "2", "--seed", "5", "--out", str(out)]
    stopped = run_command_line(*common, "--server", "http://127.0.0.1:9", "--frames", "1-2")
    assert stopped.returncode == 1
    assert "stopped at frame 1; the frames before it are kept: run the same command again" in stopped.stderr
    assert not list(out.glob("shot_Scene_*"))

    first = run_command_line(*common, "--server", server, "--frames", "1-2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "seed 5 for every frame" in first.stdout
    assert "note: the depth range is measured per frame (Auto), so its scale can jump" in first.stdout
    written = {path.name: path.stat().st_mtime_ns for path in out.glob("shot_Scene_*")}
    assert sorted(written) == ["shot_Scene_0001.png", "shot_Scene_0002.png"]

    applied = tmp_path / "applied.blend"
    resumed = run_command_line(*common, "--server", server, "--frames", "1-3", "--apply", "background",
                               "--save-blend", str(applied))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "frame 1: done already" in resumed.stdout and "frame 2: done already" in resumed.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written  # kept, not redone
    assert sorted(path.name for path in out.iterdir()) == [
        "frames_report.json", "frames_report.png", "passes", *(f"shot_Scene_000{frame}.png" for frame in (1, 2, 3))]
    for frame in (1, 2, 3):
        assert json.loads(Image.open(out / f"shot_Scene_000{frame}.png").text["sd_blender"])["seed"] == 5

    bpy.ops.wm.open_mainfile(filepath=str(applied))
    (background,) = bpy.context.scene.camera.data.background_images
    assert background.image.source == 'SEQUENCE'
    assert os.path.basename(background.image.filepath) == "shot_Scene_0001.png"
    user = background.image_user
    assert (user.frame_start, user.frame_offset, user.frame_duration) == (1, 0, 3)


def test_frames_take_one_image_each_and_no_texture(saved_scene, tmp_path):
    for option, message in ((["--num-images", "2"], "--frames makes one image a frame"),
                            (["--apply", "texture"], "with --frames use --apply background")):
        completed = run_command_line("generate", str(tmp_path / "shot.blend"), "--frames", "1-2", *option)
        assert completed.returncode == 1 and message in completed.stderr, completed.stderr[-2000:]


def test_the_command_line_checks_the_servers_limits_before_rendering(saved_scene, tmp_path, server):
    out = tmp_path / "results"
    completed = run_command_line("generate", str(tmp_path / "shot.blend"), "--server", server, "--steps", "200",
                                 "--num-images", "9", "--scheduler", "karras", "--out", str(out))
    assert completed.returncode == 1
    assert ("sd_blender: error: Steps 200 is outside this server's range 1 to 150; "
            "Images 9 is outside this server's range 1 to 8; Sampler 'karras' is not one of this server's: unipc, ")\
        in completed.stderr
    assert not out.exists()


def test_a_missing_file_or_scene_is_one_line_naming_it(saved_scene, tmp_path):
    (tmp_path / "broken.blend").write_bytes(b"not a blend file")
    for arguments, message in (
        (["passes", str(tmp_path / "nowhere.blend")], f"sd_blender: error: no .blend file at {tmp_path / 'nowhere.blend'}"),
        (["passes", str(tmp_path / "broken.blend")], f"sd_blender: error: Blender cannot open {tmp_path / 'broken.blend'}: "),
        (["passes", str(tmp_path / "shot.blend"), "--scene", "Missing"],
         "sd_blender: error: there is no scene named 'Missing'; this file has: Scene"),
    ):
        completed = run_command_line(*arguments, "--out", str(tmp_path / "out"))
        assert completed.returncode == 1, completed.stdout[-2000:]
        assert message in completed.stderr and "Traceback" not in completed.stderr, completed.stderr[-2000:]


def test_the_command_line_runs_on_the_open_file_as_blender_c_does(addon, tmp_path, capsys):
    """`blender -b shot.blend -c sd_blender passes ...` calls cli.run on the already open file."""
    from sd_blender.ui import cli

    sphere_and_wall_scene(bpy.context.scene, size=64)
    assert cli.run(["passes", "--kinds", "depth", "--out", str(tmp_path)]) == 0
    assert np.asarray(Image.open(tmp_path / "depth_0001.png"))[32, 32] == 255
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["passes", "--kinds", "depth,nope"])
    assert exit_info.value.code == 2
    assert "unknown pass nope" in capsys.readouterr().err


def test_refresh_lists_the_servers_controlnets_for_the_units(addon):
    assert bpy.ops.sd_blender.refresh_models() == {"FINISHED"}  # returns before the answer
    wait_for(lambda: not state.server_models.fetching, "the model list fetched")
    assert state.server_models.names("depth") == ["tiny"]
    assert state.server_models.status.startswith("7 ControlNets on http://127.0.0.1:")
    if bpy.app.timers.is_registered(operators._redraw_when_models_arrive):
        bpy.app.timers.unregister(operators._redraw_when_models_arrive)
