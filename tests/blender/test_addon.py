"""The add-on registers in real Blender: panel, operators, settings saved on the scene."""
import bpy
import pytest

import sd_blender


@pytest.fixture
def registered(empty_scene):
    sd_blender.register()
    yield empty_scene
    sd_blender.unregister()


def test_panel_operators_and_settings_exist(registered):
    assert hasattr(bpy.types, "SDBLENDER_PT_generate")
    assert bpy.types.SDBLENDER_PT_generate.bl_category == "SD"
    for name in ("generate", "cancel", "preview_passes", "apply_result"):
        assert hasattr(bpy.ops.sd_blender, name)
    settings = registered.sd_blender
    assert (settings.steps, settings.use_depth, settings.use_scene_resolution) == (20, True, True)


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
    from sd_blender.properties import generation_size

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
    sd_blender.register()  # the fixture unregisters again
