"""The sidebar panels draw every setting they name.

Background Blender has no window, so no real UILayout exists: the panels draw into a stand-in
layout that checks each property and operator they name exists, as Blender would when drawing.
"""
import bpy
import pytest

import sd_blender
from scenes import sphere_and_wall_scene
from sd_blender.ui import operators, panels, state


class CheckingLayout:
    """Records what a panel draws and fails on a property or operator Blender would not find."""

    def __init__(self, drawn):
        self.drawn = drawn
        self.enabled = True

    def _child(self, *args, **kwargs):
        return CheckingLayout(self.drawn)

    row = column = box = split = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{data!r} has no property {name}"
        self.drawn.append(("prop", name))

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        assert name in data.bl_rna.properties and search_name in search_data.bl_rna.properties
        self.drawn.append(("prop_search", name))

    def operator(self, idname, **kwargs):
        properties = CheckingOperatorProperties(idname)  # fails for an operator that is not registered
        self.drawn.append(("operator", idname))
        return properties

    def operator_menu_enum(self, idname, property_name, **kwargs):
        assert property_name in operator_property_names(idname), f"{idname} has no property {property_name}"
        self.operator(idname)

    def template_list(self, list_type, list_id, data, name, active_data, active_name, **kwargs):
        assert hasattr(bpy.types, list_type), list_type
        assert name in data.bl_rna.properties and active_name in active_data.bl_rna.properties
        self.drawn.append(("list", name))

    def label(self, text="", **kwargs):
        self.drawn.append(("label", text))

    def progress(self, **kwargs):
        self.drawn.append(("progress", kwargs.get("text")))


def operator_property_names(idname):
    """The operator's properties, from its RNA (bpy.ops answers any name, registered or not)."""
    module, name = idname.split(".")
    try:
        rna = getattr(getattr(bpy.ops, module), name).get_rna_type()
    except KeyError:
        raise AssertionError(f"no operator {idname}") from None
    return {prop.identifier for prop in rna.properties}


class CheckingOperatorProperties:
    """What layout.operator() returns: setting a property the operator does not have fails, as in Blender."""

    def __init__(self, idname):
        object.__setattr__(self, "_names", operator_property_names(idname))
        object.__setattr__(self, "_idname", idname)

    def __setattr__(self, name, value):
        assert name in self._names, f"{self._idname} has no property {name}"


def test_the_stand_in_layout_rejects_what_blender_would_not_find(scene):
    layout = CheckingLayout([])
    layout.operator("sd_blender.remove_lora").index = 0
    with pytest.raises(AssertionError, match="sd_blender.remove_lora has no property idx"):
        layout.operator("sd_blender.remove_lora").idx = 0
    with pytest.raises(AssertionError, match="has no property nope"):
        layout.operator_menu_enum("sd_blender.add_control_unit", "nope")
    with pytest.raises(AssertionError, match="no operator sd_blender.no_such_operator"):
        layout.operator("sd_blender.no_such_operator")


def draw(panel_class):
    """Run the panel's draw with the stand-in layout; returns what it drew."""
    drawn = []

    class StandIn:
        layout = CheckingLayout(drawn)

        def __getattr__(self, name):
            return getattr(panel_class, name)

    panel_class.draw(StandIn(), bpy.context)
    return drawn


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
