"""OpenPose keypoints placed on bones by hand, per armature, winning over the rig preset: the
property saved on the armature, the operators that add and remove them, and their panel rows.
scene/pose.py reads them."""
import bpy

from ..core.rigs import KEYPOINT_IDS

_ENDS = (("HEAD", "Head", "The bone's head (its root)"), ("TAIL", "Tail", "The bone's tail (its tip)"))


class SDBLENDER_PG_keypoint_override(bpy.types.PropertyGroup):
    """One keypoint placed on a bone by hand; it wins over the rig preset."""

    keypoint: bpy.props.EnumProperty(
        name="Keypoint",
        items=[(keypoint, keypoint.replace("_", " ").replace(".", ": ").capitalize(), "") for keypoint in KEYPOINT_IDS],
    )
    bone: bpy.props.StringProperty(name="Bone", description="The bone the keypoint sits on")
    end: bpy.props.EnumProperty(name="End", items=_ENDS, default="HEAD")


def _active_armature(context):
    obj = context.object
    return obj if obj is not None and obj.type == "ARMATURE" else None


class SDBLENDER_OT_add_keypoint_override(bpy.types.Operator):
    """Place an OpenPose keypoint on a bone of the active armature by hand (wins over the rig preset)"""

    bl_idname = "sd_blender.add_keypoint_override"
    bl_label = "Add Keypoint Override"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _active_armature(context) is not None

    def execute(self, context):
        _active_armature(context).data.sd_blender_keypoints.add()
        return {"FINISHED"}


class SDBLENDER_OT_remove_keypoint_override(bpy.types.Operator):
    """Remove a keypoint override of the active armature"""

    bl_idname = "sd_blender.remove_keypoint_override"
    bl_label = "Remove Keypoint Override"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty(min=0)

    @classmethod
    def poll(cls, context):
        return _active_armature(context) is not None

    def execute(self, context):
        overrides = _active_armature(context).data.sd_blender_keypoints
        if self.index >= len(overrides):
            self.report({"ERROR"}, f"the armature has no keypoint override {self.index}")
            return {"CANCELLED"}
        overrides.remove(self.index)
        return {"FINISHED"}


def draw_keypoint_overrides(layout, armature):
    column = layout.column(align=True)
    column.label(text=f"Keypoints placed by hand on {armature.name}")
    for index, override in enumerate(armature.data.sd_blender_keypoints):
        row = column.row(align=True)
        row.prop(override, "keypoint", text="")
        row.prop_search(override, "bone", armature.data, "bones", text="")
        row.prop(override, "end", text="")
        row.operator("sd_blender.remove_keypoint_override", text="", icon="X").index = index
    column.operator("sd_blender.add_keypoint_override", icon="ADD")


CLASSES = (SDBLENDER_PG_keypoint_override, SDBLENDER_OT_add_keypoint_override, SDBLENDER_OT_remove_keypoint_override)


def register_properties():
    bpy.types.Armature.sd_blender_keypoints = bpy.props.CollectionProperty(
        type=SDBLENDER_PG_keypoint_override,
        name="OpenPose keypoints",
        description="Keypoints placed on bones by hand, in place of the rig preset's",
    )


def unregister_properties():
    del bpy.types.Armature.sd_blender_keypoints
