"""The add-on registers in real Blender: panel, operators, settings saved on the scene."""
import bpy
import pytest

import sd_blender
from waiting import wait_for


@pytest.fixture
def registered(empty_scene):
    sd_blender.register()
    yield empty_scene
    sd_blender.unregister()


def test_panel_operators_and_settings_exist(registered):
    assert hasattr(bpy.types, "SDBLENDER_PT_generate")
    assert bpy.types.SDBLENDER_PT_generate.bl_category == "SD"
    for name in ("generate", "cancel", "preview_passes", "apply_result", "add_control_unit", "refresh_models"):
        assert hasattr(bpy.ops.sd_blender, name)
    settings = registered.sd_blender
    assert (settings.steps, len(settings.control_units), settings.use_scene_resolution) == (20, 0, True)


def test_control_units_are_added_removed_and_saved(registered, tmp_path):
    for kind in ("depth", "openpose", "seg"):
        bpy.ops.sd_blender.add_control_unit(kind=kind)
    settings = registered.sd_blender
    assert [unit.kind for unit in settings.control_units] == ["depth", "openpose", "seg"]
    assert settings.active_control_index == 2
    settings.active_control_index = 1
    bpy.ops.sd_blender.remove_control_unit()
    settings.control_units[0].model = "lllyasviel/control_v11f1p_sd15_depth"
    settings.control_units[0].weight = 0.6
    path = str(tmp_path / "units.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    units = bpy.context.scene.sd_blender.control_units
    assert [(unit.kind, unit.model, round(unit.weight, 3)) for unit in units] == [
        ("depth", "lllyasviel/control_v11f1p_sd15_depth", 0.6),
        ("seg", "", 1.0),
    ]


def test_a_unit_that_starts_after_it_ends_is_refused_before_rendering(registered):
    from sd_blender.scene.request import checked_units

    settings = registered.sd_blender
    unit = settings.control_units.add()
    unit.start, unit.end = 0.7, 0.3
    with pytest.raises(ValueError, match=r"depth control: Start \(0.70\) must be below End \(0.30\)"):
        checked_units(settings)
    unit.start = 0.0
    assert len(checked_units(settings)) == 1


def test_the_servers_limits_are_read_and_checked_before_rendering(addon):
    from sd_blender.ui import state

    state.reset()
    assert bpy.ops.sd_blender.refresh_models() == {"FINISHED"}
    wait_for(lambda: not state.server_models.fetching, "the model list and limits fetched")
    limits = state.server_models.limits
    assert (limits["controls"]["max"], limits["loras"]["max"], limits["lora_weight"]["max"]) == (4, 8, 4.0)
    from sd_blender.ui.properties import _scheduler_names

    assert _scheduler_names(None, None, "dpm") == ["dpmpp_2m", "dpmpp_2m_karras"]  # the Sampler field's list
    settings = bpy.context.scene.sd_blender
    for _ in range(5):
        settings.control_units.add()
    for index in range(9):
        settings.loras.add().name = f"style{index}"
    settings.loras[0].weight = 4.5  # the add-on's own slider stops at 2; the server says how far it goes
    with pytest.raises(RuntimeError) as refused:
        bpy.ops.sd_blender.generate()
    assert str(refused.value).strip() == (
        "Error: 5 control units are enabled; the server takes at most 4; 9 LoRAs are enabled; the server takes "
        "at most 8: switch some off; a LoRA's weight 4.5 is outside this server's range -4 to 4")
    assert state.generation.active is None  # nothing was rendered or sent


def test_settings_are_saved_with_the_blend(registered, tmp_path):
    registered.sd_blender.prompt = "a stone lighthouse"
    registered.sd_blender.steps = 33
    path = str(tmp_path / "saved.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=path)
    assert bpy.context.scene.sd_blender.prompt == "a stone lighthouse"
    assert bpy.context.scene.sd_blender.steps == 33


def test_generation_size_follows_the_scene_and_rounds_to_8(registered):
    from sd_blender.scene.request import generation_size

    registered.render.resolution_x, registered.render.resolution_y = 1001, 767
    registered.render.resolution_percentage = 50
    assert generation_size(registered) == (504, 384)
    registered.sd_blender.use_scene_resolution = False
    registered.sd_blender.width, registered.sd_blender.height = 515, 300
    assert generation_size(registered) == (512, 304)


def test_preview_operator_reports_a_missing_camera(registered):
    with pytest.raises(RuntimeError, match="no active camera"):
        bpy.ops.sd_blender.preview_passes()


def test_unregister_removes_everything(registered):
    sd_blender.unregister()
    assert not hasattr(bpy.types, "SDBLENDER_PT_generate")
    assert not hasattr(bpy.types.Scene, "sd_blender")
    assert not hasattr(bpy.types.Object, "sd_blender_seg_class")
    sd_blender.register()  # the fixture unregisters again


def test_preview_renders_each_units_pass_into_a_named_image(registered):
    from scenes import sphere_and_wall_scene

    sphere_and_wall_scene(registered, size=64)
    for kind in ("normal", "seg", "openpose"):
        bpy.ops.sd_blender.add_control_unit(kind=kind)
    assert bpy.ops.sd_blender.preview_passes() == {"FINISHED"}
    for name in ("SD normal", "SD seg", "SD openpose"):
        assert tuple(bpy.data.images[name].size) == (64, 64)
    assert "SD depth" not in bpy.data.images  # only the units' passes
    pixels = bpy.data.images["SD normal"].pixels  # rows from the bottom
    top_left, centre = (63 * 64) * 4, (32 * 64 + 32) * 4
    assert [round(value * 255) for value in pixels[top_left:top_left + 3]] == [128, 128, 255]  # background
    assert pixels[centre + 2] > 0.9  # the sphere faces the viewer: blue
