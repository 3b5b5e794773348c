"""The sidebar panels draw every setting they name.

Background Blender has no window, so no real UILayout exists: the panels draw into a stand-in
layout (stand_in_layout.py) that checks each property and operator they name exists, as Blender
would when drawing.
"""
import bpy
import pytest

import sd_blender
from scenes import sphere_and_wall_scene
from sd_blender.ui import panels, state
from stand_in_layout import CheckingLayout, draw


def test_the_stand_in_layout_rejects_what_blender_would_not_find(scene):
    layout = CheckingLayout([])
    layout.operator("sd_blender.remove_lora").index = 0
    with pytest.raises(AssertionError, match="sd_blender.remove_lora has no property idx"):
        layout.operator("sd_blender.remove_lora").idx = 0
    with pytest.raises(AssertionError, match="has no property nope"):
        layout.operator_menu_enum("sd_blender.add_control_unit", "nope")
    with pytest.raises(AssertionError, match="no operator sd_blender.no_such_operator"):
        layout.operator("sd_blender.no_such_operator")


@pytest.fixture
def scene(empty_scene):
    sd_blender.register()
    yield sphere_and_wall_scene(empty_scene)
    sd_blender.unregister()


def test_an_empty_unit_list_offers_quick_buttons(scene):
    drawn = draw(panels.SDBLENDER_PT_generate)
    assert ("label", "No control: add the passes to condition on") in drawn
    assert drawn.count(("operator", "sd_blender.add_control_unit")) == 4  # depth, normal, openpose, +
    assert ("label", "128 x 128 px (rounded to a multiple of 8)") in drawn


def test_a_unit_shows_its_controlnet_and_the_model_list_status(scene):
    state.reset()  # as a fresh Blender session has it
    bpy.ops.sd_blender.add_control_unit(kind="normal")
    drawn = draw(panels.SDBLENDER_PT_generate)
    assert ("prop", "model") in drawn and ("operator", "sd_blender.refresh_models") in drawn
    assert ("label", "not fetched: press Refresh") in drawn


def test_the_passes_panel_shows_rig_presets_shot_range_and_overrides(scene):
    bpy.ops.object.armature_add()
    armature = bpy.context.object
    armature.name = "Puppet"
    scene.sd_blender.depth_range_mode = "SHOT"
    drawn = draw(panels.SDBLENDER_PT_passes)
    assert ("label", "Puppet: not recognised") in drawn
    assert ("operator", "sd_blender.measure_shot_depth") in drawn
    bpy.ops.sd_blender.add_keypoint_override()
    drawn = draw(panels.SDBLENDER_PT_passes)
    assert ("prop_search", "bone") in drawn and ("operator", "sd_blender.remove_keypoint_override") in drawn
    bpy.ops.sd_blender.remove_keypoint_override(index=0)
    assert len(armature.data.sd_blender_keypoints) == 0


def test_segmentation_classes_of_the_active_object_and_material(scene):
    sphere = bpy.data.objects["Sphere"]
    sphere.data.materials.append(bpy.data.materials.new("Stone"))
    bpy.context.view_layer.objects.active = sphere
    drawn = draw(panels.SDBLENDER_PT_passes)
    assert ("label", "Segmentation of Sphere") in drawn
    assert drawn.count(("prop", "sd_blender_seg_class")) == 2


def test_the_animation_panel_shows_the_options_of_the_temporal_mode(scene):
    settings = scene.sd_blender
    assert settings.temporal_mode == "FULL"  # frame ranges default to full
    shown = {}
    for mode in ("FULL", "ANCHOR", "WARP", "OFF"):
        settings.temporal_mode = mode
        shown[mode] = draw(panels.SDBLENDER_PT_animation)
    assert all(("prop", "temporal_mode") in drawn for drawn in shown.values())
    assert [mode for mode, drawn in shown.items() if ("prop", "temporal_anchor_every") in drawn] == ["FULL", "ANCHOR"]
    settings.temporal_mode, settings.temporal_match_colors = "WARP", True  # matching the keyframes' colours
    assert ("prop", "temporal_anchor_every") in draw(panels.SDBLENDER_PT_animation)
    for option in ("temporal_warp_strength", "temporal_match_colors"):
        assert [mode for mode, drawn in shown.items() if ("prop", option) in drawn] == ["FULL", "WARP"]
