"""Generate Texture from the panel: a background process (here `python -m sd_blender texture`, as
Blender runs as a Python module) textures the selected cube against the live tiny-model server
while Blender stays free; the panel shows "view N of M" and Cancel stops it."""
import json
import os

import bpy
import pytest

from live_server import JOB_AHEAD
from sd_blender.core.client import ServerClient
from sd_blender.ui import panels, state, texture
from stand_in_layout import draw
from waiting import wait_for


@pytest.fixture
def selected_cube(addon, tmp_path):
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    cube = bpy.context.active_object
    cube.name = "Cube"
    settings = bpy.context.scene.sd_blender
    settings.prompt, settings.steps, settings.use_scene_resolution = "rusty metal", 2, False
    settings.width = settings.height = 64
    settings.control_units.add().kind = "depth"
    settings.texture_views, settings.texture_size = 3, "512"
    settings.texture_exponent, settings.texture_discard_angle = 2.0, 80.0
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "cube.blend"))
    cube.select_set(True)
    return cube


def run_texture_timer_until_done():
    """Generate Texture's timer, called as Blender would, until the batch has ended."""
    assert bpy.app.timers.is_registered(texture.poll_texture)
    wait_for(lambda: texture.poll_texture() is None, "the texture batch ended", timeout=300)
    bpy.app.timers.unregister(texture.poll_texture)
    return state.texture_batch.active


def test_generate_texture_returns_at_once_and_shows_the_texture_on_the_cube(selected_cube, tmp_path):
    assert bpy.ops.sd_blender.generate_texture() == {"FINISHED"}
    assert not state.texture_batch.active.batch.finished  # it returned without waiting for the views
    assert not bpy.ops.sd_blender.generate_texture.poll()  # one at a time
    assert ("operator", "sd_blender.cancel_texture") in draw(panels.SDBLENDER_PT_texture)
    wait_for(lambda: state.texture_batch.active.batch.snapshot().message.startswith("view "), "progress shown")
    active = run_texture_timer_until_done()
    assert active.batch.snapshot().state == "done", active.batch.snapshot().message
    folder = tmp_path / "sd_blender"
    assert active.outcome.startswith(f"done: 3 view(s) in {folder}; textured Cube (report: ")
    assert os.path.isfile(folder / "cube_Scene_Cube_texture.png")
    tree = selected_cube.material_slots[0].material.node_tree
    assert tree.nodes["SD Texture Image"].image.filepath.endswith("cube_Scene_Cube_texture.png")
    assert tree.nodes["SD Texture UV Map"].uv_map == "UVMap"
    report = json.loads((folder / "cube_Scene_texture_report.json").read_text())
    assert report["fusion"] == {"exponent": 2.0, "discard_angle": 80.0}  # the panel's
    drawn = draw(panels.SDBLENDER_PT_texture)
    assert ("operator", "sd_blender.generate_texture") in drawn and ("prop", "texture_discard_angle") in drawn


def test_cancel_stops_the_texture_and_says_how_far_it_got(selected_cube, server):
    client = ServerClient(server)
    ahead = client.submit(JOB_AHEAD)  # holds view 1 queued
    assert bpy.ops.sd_blender.generate_texture() == {"FINISHED"}
    batch = state.texture_batch.active.batch
    wait_for(lambda: "queued on the server" in batch.snapshot().message, "view 1 queued")
    assert batch.snapshot().message.startswith("view 1 of 3")
    assert bpy.ops.sd_blender.cancel_texture() == {"FINISHED"}
    active = run_texture_timer_until_done()
    client.cancel(ahead)
    assert active.batch.snapshot().state == "cancelled"
    assert active.outcome == "cancelled: 0 of 3 views done and kept; Generate Texture starts the views again"
    assert not selected_cube.material_slots, "nothing was applied"


def test_nothing_selected_says_what_to_fix(selected_cube):
    selected_cube.select_set(False)
    with pytest.raises(RuntimeError, match="select the mesh objects to texture"):
        bpy.ops.sd_blender.generate_texture()


def test_a_tileable_material_repeats_a_seamless_tile_through_the_uv_map(selected_cube):
    from timers import run_timer_until_done

    bpy.context.scene.sd_blender.apply_to = "MATERIAL"
    assert bpy.ops.sd_blender.generate() == {"FINISHED"}
    snapshot = run_timer_until_done().job.snapshot()
    assert snapshot.state == "done", snapshot.message
    assert snapshot.parameters["tiling"] == "xy" and not snapshot.parameters.get("controls")
    tree = selected_cube.material_slots[0].material.node_tree
    tile = tree.nodes["SD Tile Image"]
    assert tile.extension == "REPEAT" and tile.image.filepath.endswith(".png")
    assert tree.nodes["SD Tile UV Map"].uv_map == ""  # the render UV map
    assert tree.nodes["Principled BSDF"].inputs["Base Color"].links[0].from_node == tree.nodes["SD Tile Mix"]


def test_a_tile_needs_a_uv_map(selected_cube):
    from timers import run_timer_until_done

    selected_cube.data.uv_layers.remove(selected_cube.data.uv_layers[0])
    bpy.context.scene.sd_blender.apply_to = "MATERIAL"
    assert bpy.ops.sd_blender.generate() == {"FINISHED"}
    assert run_timer_until_done().outcome.endswith("not applied: 'Cube' has no UV map for the tile: unwrap it "
                                                   "(or use Generate Texture)")


def test_a_server_that_cannot_be_reached_stops_the_texture_with_the_reason_and_it_runs_again(selected_cube, addon):
    url = addon.server_url
    addon.server_url = "http://127.0.0.1:9"
    assert bpy.ops.sd_blender.generate_texture() == {"FINISHED"}
    active = run_texture_timer_until_done()
    assert active.batch.snapshot().state == "failed"
    assert active.outcome.startswith("error: view 1: cannot reach the sd_blender server at http://127.0.0.1:9")
    assert active.outcome.endswith("0 of 3 views done and kept; Generate Texture starts the views again")

    addon.server_url = url
    assert bpy.ops.sd_blender.generate_texture() == {"FINISHED"}
    assert run_texture_timer_until_done().batch.snapshot().state == "done"
