"""OpenPose keypoints of the scene's armatures, seen through the active camera.

Which bone is which keypoint is core/rigs.py's business; this reads the armatures a render would
show, their bone names and keypoint overrides (ui/keypoint_overrides.py defines and edits them),
their evaluated pose (actions, constraints and drivers at the depsgraph's frame) and projects the
keypoints to pixels.
"""
import bpy
from mathutils import Vector

from ..core.rigs import map_rig


def rig_map(armature_object):
    """The armature's RigMap: its preset's keypoint sources with its overrides on top."""
    overrides = [
        (item.keypoint, item.bone, item.end.lower())
        # Absent while the add-on is not registered (scripts and tests calling this module).
        for item in getattr(armature_object.data, "sd_blender_keypoints", ())
    ]
    return map_rig([bone.name for bone in armature_object.data.bones], overrides)


def rig_preset_name(armature_object):
    """The rig preset recognised for the armature, e.g. "Mixamo", or "not recognised"."""
    return rig_map(armature_object).preset


def scene_people(scene, width, height, depsgraph=None):
    """One Person per rendered armature with a recognised rig or overrides, by object name, with
    keypoints in pixels of a width x height image from the scene's camera. The depsgraph defaults
    to the context's, evaluated at the current frame."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    project = camera_projection(scene, depsgraph, width, height)
    people = []
    for armature in rendered_armatures(scene, depsgraph.view_layer):
        rig = rig_map(armature)
        if rig.sources:
            points = rig.locate(posed_bone_ends(armature.evaluated_get(depsgraph), rig.bones()))
            pixels = {keypoint: project(point) for keypoint, point in points.items() if point is not None}
            people.append(rig.person(pixels))
    return people


def rendered_armatures(scene, view_layer):
    """The armature objects a render of the view layer shows: not hidden from renders and in a
    collection that is neither excluded from the view layer nor disabled in renders."""
    enabled = _enabled_collections(view_layer.layer_collection)
    armatures = [
        obj
        for obj in scene.objects
        if obj.type == "ARMATURE" and not obj.hide_render and any(c.name in enabled for c in obj.users_collection)
    ]
    return sorted(armatures, key=lambda obj: obj.name)


def _enabled_collections(layer_collection):
    if layer_collection.exclude or layer_collection.collection.hide_render:
        return set()
    enabled = {layer_collection.collection.name}
    for child in layer_collection.children:
        enabled |= _enabled_collections(child)
    return enabled


def posed_bone_ends(evaluated_armature, names):
    """Bone name → (head, tail) in world space, as posed."""
    to_world, bones = evaluated_armature.matrix_world, evaluated_armature.pose.bones
    return {name: (tuple(to_world @ bones[name].head), tuple(to_world @ bones[name].tail)) for name in names}


def camera_projection(scene, depsgraph, width, height):
    """A function from a world point to its pixel (x right, y down from the top-left corner) in a
    width x height image from the scene's camera, perspective or orthographic; None behind the
    camera's near plane or outside the image."""
    if scene.camera is None:
        raise ValueError("the scene has no active camera")
    camera = scene.camera.evaluated_get(depsgraph)
    world_to_clip = camera.calc_matrix_camera(depsgraph, x=width, y=height) @ camera.matrix_world.inverted()

    def project(point):
        x, y, z, w = world_to_clip @ Vector((*point, 1.0))
        if w <= 0 or z < -w:
            return None
        column, row = (x / w + 1) / 2 * width, (1 - y / w) / 2 * height
        return (column, row) if 0 <= column < width and 0 <= row < height else None

    return project
