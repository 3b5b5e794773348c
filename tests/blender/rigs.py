"""Test armatures: a simple humanoid named after each rig convention, and Rigify's own rigs.

The humanoid is 1.8 units tall, stands at its object's origin facing -Y with its left at +X.

    python tests/blender/rigs.py OUT.blend     writes Rigify's human metarig and its generated rig
"""
import os
import subprocess
import sys
from dataclasses import dataclass, replace

import bpy
import numpy as np
from mathutils import Matrix, Vector

FINGERS = ("thumb", "index", "middle", "ring", "pinky")
# part → (head, tail, parent) on the left side (x > 0) or in the middle; the right side mirrors x.
BODY = {
    "hips": ((0, 0, 0.95), (0, 0, 1.1), None),
    "spine": ((0, 0, 1.1), (0, 0, 1.4), "hips"),
    "neck": ((0, 0, 1.4), (0, 0, 1.55), "spine"),
    "head": ((0, 0, 1.55), (0, 0, 1.8), "neck"),
    "upper_arm": ((0.2, 0, 1.4), (0.45, 0, 1.4), "spine"),
    "forearm": ((0.45, 0, 1.4), (0.7, 0, 1.4), "upper_arm"),
    "hand": ((0.7, 0, 1.4), (0.78, 0, 1.4), "forearm"),
    "thigh": ((0.1, 0, 0.95), (0.1, 0, 0.5), "hips"),
    "shin": ((0.1, 0, 0.5), (0.1, 0, 0.08), "thigh"),
    "foot": ((0.1, 0, 0.08), (0.1, -0.15, 0.0), "shin"),
    "eye": ((0.035, -0.08, 1.68), (0.035, -0.1, 1.68), "head"),
}
SIDED = {"upper_arm", "forearm", "hand", "thigh", "shin", "foot", "eye"}
FINGER_BONE_LENGTH = 0.03


def finger_bone(finger, n):
    """Bone n (1 to 3) of a left finger: (head, tail, parent). Fingers point along +X, spread in y;
    the thumb's first bone is its metacarpal, inside the palm."""
    index = FINGERS.index(finger)
    start = 0.71 if finger == "thumb" else 0.78
    y = -0.04 + 0.02 * index
    head = (start + FINGER_BONE_LENGTH * (n - 1), y, 1.4)
    tail = (head[0] + FINGER_BONE_LENGTH, y, 1.4)
    return head, tail, (f"{finger}{n - 1}" if n > 1 else "hand")


@dataclass(frozen=True)
class Naming:
    """How one convention names the humanoid's bones: templates with {side} (and, for fingers,
    {finger} and {joint})."""

    preset: str  # what the add-on should recognise it as
    sides: tuple  # the words for (left, right)
    parts: dict  # part → template
    fingers: str = ""  # finger bone template; empty: the rig has no fingers
    finger_words: tuple = ("Thumb", "Index", "Middle", "Ring", "Pinky")
    joints: tuple = ("1", "2", "3")
    thumb_joints: tuple = ()  # where the thumb's bones are named unlike the other fingers'
    eye_end: str = "head"  # the end of the eye bone that is the eye keypoint

    def bone_name(self, part, side="left"):
        """The name of a body part ("upper_arm") or finger bone ("thumb1") on the given side."""
        word = self.sides[side == "right"]
        if part[:-1] in FINGERS:
            finger, n = part[:-1], int(part[-1])
            joints = self.thumb_joints if finger == "thumb" and self.thumb_joints else self.joints
            return self.fingers.format(side=word, finger=self.finger_words[FINGERS.index(finger)], joint=joints[n - 1])
        return self.parts[part].format(side=word)


def in_body_order(*names):
    """Part → name, the names given in BODY's order: hips, spine, neck, head, upper arm, forearm,
    hand, thigh, shin, foot and (where the rig has one) eye."""
    return dict(zip(BODY, names))


NAMINGS = {
    "rigify_names": Naming(
        "Rigify metarig",
        ("L", "R"),
        in_body_order("spine", "spine.001", "spine.004", "spine.006", "upper_arm.{side}", "forearm.{side}",
                      "hand.{side}", "thigh.{side}", "shin.{side}", "foot.{side}", "eye.{side}"),
        fingers="{finger}.0{joint}.{side}",
        finger_words=("thumb", "f_index", "f_middle", "f_ring", "f_pinky"),
        eye_end="tail",
    ),
    "mixamo": Naming(
        "Mixamo",
        ("Left", "Right"),
        in_body_order("mixamorig:Hips", "mixamorig:Spine", "mixamorig:Neck", "mixamorig:Head", "mixamorig:{side}Arm",
                      "mixamorig:{side}ForeArm", "mixamorig:{side}Hand", "mixamorig:{side}UpLeg", "mixamorig:{side}Leg",
                      "mixamorig:{side}Foot", "mixamorig:{side}Eye"),
        fingers="mixamorig:{side}Hand{finger}{joint}",
    ),
    "unreal": Naming(
        "Unreal mannequin",
        ("l", "r"),
        in_body_order("pelvis", "spine_01", "neck_01", "head", "upperarm_{side}", "lowerarm_{side}", "hand_{side}",
                      "thigh_{side}", "calf_{side}", "foot_{side}"),
        fingers="{finger}_0{joint}_{side}",
        finger_words=FINGERS,
    ),
    "vrm0": Naming(
        "VRM",
        ("left", "right"),
        in_body_order("hips", "spine", "neck", "head", "{side}UpperArm", "{side}LowerArm", "{side}Hand",
                      "{side}UpperLeg", "{side}LowerLeg", "{side}Foot", "{side}Eye"),
        fingers="{side}{finger}{joint}",
        finger_words=("Thumb", "Index", "Middle", "Ring", "Little"),
        joints=("Proximal", "Intermediate", "Distal"),
    ),
    "vroid": Naming(
        "VRoid",
        ("L", "R"),
        in_body_order("J_Bip_C_Hips", "J_Bip_C_Spine", "J_Bip_C_Neck", "J_Bip_C_Head", "J_Bip_{side}_UpperArm",
                      "J_Bip_{side}_LowerArm", "J_Bip_{side}_Hand", "J_Bip_{side}_UpperLeg", "J_Bip_{side}_LowerLeg",
                      "J_Bip_{side}_Foot", "J_Adj_{side}_FaceEye"),
        fingers="J_Bip_{side}_{finger}{joint}",
        finger_words=("Thumb", "Index", "Middle", "Ring", "Little"),
    ),
    "generic_dot_L": Naming(
        "Generic left/right",
        ("L", "R"),
        in_body_order("Pelvis", "Chest", "Neck", "Head", "Arm.{side}", "ForeArm.{side}", "Hand.{side}",
                      "Thigh.{side}", "Shin.{side}", "Foot.{side}", "Eye.{side}"),
        fingers="{finger}.0{joint}.{side}",
    ),
    "generic_lower_l": Naming(
        "Generic left/right",
        ("l", "r"),
        in_body_order("root_hips", "torso", "neck", "head", "upper_arm_{side}", "lower_arm_{side}", "hand_{side}",
                      "upper_leg_{side}", "lower_leg_{side}", "foot_{side}"),
    ),
    "generic_upper_R": Naming(
        "Generic left/right",
        ("L", "R"),
        in_body_order("Root", "Spine1", "Neck1", "Head1", "UpperArm_{side}", "LowerArm_{side}", "Hand_{side}",
                      "UpLeg_{side}", "Calf_{side}", "Foot_{side}", "Eye_{side}"),
    ),
    "generic_prefix": Naming(
        "Generic left/right",
        ("Left", "Right"),
        in_body_order("Hip", "Body", "Neck", "Head", "{side}_UpperArm", "{side}_Forearm",
                      "{side}_Hand", "{side}_Thigh", "{side}_LowerLeg", "{side}_Foot", "{side}_Eye"),
        fingers="{side}_{finger}_{joint}",
    ),
    "generic_letter_prefix": Naming(
        "Generic left/right",
        ("L", "R"),
        in_body_order("Hips", "Spine", "Neck", "Head", "{side}_UpperArm", "{side}_Forearm", "{side}_Hand",
                      "{side}_Thigh", "{side}_Calf", "{side}_Foot", "{side}_Eye"),
    ),
}
# VRM 1.0 renamed the thumb's bones; the other bones keep their VRM 0.x names.
NAMINGS["vrm1"] = replace(NAMINGS["vrm0"], thumb_joints=("Metacarpal", "Proximal", "Distal"))


def mirrored(point, side):
    return (-point[0], point[1], point[2]) if side == "right" else tuple(point)


def humanoid_parts(naming):
    """(part, side) for every bone the naming gives the humanoid; side None for the middle."""
    parts = [(part, None) for part in naming.parts if part not in SIDED]
    parts += [(part, side) for side in ("left", "right") for part in naming.parts if part in SIDED]
    if naming.fingers:
        parts += [(f"{finger}{n}", side) for side in ("left", "right") for finger in FINGERS for n in (1, 2, 3)]
    return parts


def rest_bone(part, side):
    """(head, tail, parent part) of a humanoid bone at rest, in the armature's space."""
    head, tail, parent = finger_bone(part[:-1], int(part[-1])) if part[:-1] in FINGERS else BODY[part]
    return mirrored(head, side), mirrored(tail, side), parent


def build_humanoid(scene, naming, name="Humanoid", location=(0.0, 0.0, 0.0)):
    """The humanoid as an armature object with the naming's bone names."""
    armature = bpy.data.objects.new(name, bpy.data.armatures.new(name))
    armature.location = location
    scene.collection.objects.link(armature)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    bones = armature.data.edit_bones
    for part, side in humanoid_parts(naming):
        head, tail, parent = rest_bone(part, side)
        bone = bones.new(naming.bone_name(part, side or "left"))
        bone.head, bone.tail = head, tail
        if parent:
            bone.parent = bones[naming.bone_name(parent, side or "left")]
    bpy.ops.object.mode_set(mode="OBJECT")
    return armature


def arm_raise(shoulder, angle):
    """The world rotation about the shoulder, about the Y axis, that raises a left arm lying
    along +X by angle radians (and lowers a right one): as a 4x4 matrix and as a numpy function."""
    rotation = Matrix.Rotation(-angle, 4, "Y")
    pivot = Matrix.Translation(Vector(shoulder))
    about_shoulder = pivot @ rotation @ pivot.inverted()
    return about_shoulder, lambda point: tuple(about_shoulder @ Vector(point))


def pose_bone_about(armature, bone_name, about):
    """Pose one bone by a rotation (armature space); its children follow."""
    pose_bone = armature.pose.bones[bone_name]
    pose_bone.matrix = about @ armature.data.bones[bone_name].matrix_local
    bpy.context.view_layer.update()


def pinhole_pixel(point, camera_location, width, height, lens=50.0, sensor=36.0):
    """The pixel (x, y from the top-left) a world point falls on through a perspective camera at
    camera_location looking along +Y, upright, the sensor fitted to the wider image side."""
    x, y, z = np.subtract(point, camera_location)
    pixels_per_unit = lens / sensor * max(width, height) / y
    return width / 2 + x * pixels_per_unit, height / 2 - z * pixels_per_unit


def orthographic_pixel(point, camera_location, width, height, scale):
    """The same for an orthographic camera of the given scale (the wider side's extent)."""
    x, _y, z = np.subtract(point, camera_location)
    pixels_per_unit = max(width, height) / scale
    return width / 2 + x * pixels_per_unit, height / 2 - z * pixels_per_unit


def rigify_rigs_blend(path):
    """Write Rigify's human metarig ("metarig") and its generated rig ("rig") to path. Done in a
    child process: after a Rigify generation bpy's process hangs at exit (one of Blender's threads
    waits forever), so the child leaves with os._exit."""
    subprocess.run([sys.executable, __file__, str(path)], check=True, timeout=300, capture_output=True)


def _write_rigify_rigs(path):
    import addon_utils

    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("rigify", default_set=True)
    bpy.ops.object.armature_human_metarig_add()
    bpy.ops.pose.rigify_generate()
    bpy.ops.wm.save_as_mainfile(filepath=path)


def load_objects(path, names, scene):
    with bpy.data.libraries.load(str(path)) as (_source, loaded):
        loaded.objects = list(names)
    for obj in loaded.objects:
        scene.collection.objects.link(obj)
    return loaded.objects


if __name__ == "__main__":
    _write_rigify_rigs(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)
