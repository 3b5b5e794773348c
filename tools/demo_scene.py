"""Build the bundled demo scene: a posed armature with a simple body, a few props, camera, light.

    python tools/demo_scene.py OUT.blend     (with the bpy module)
"""
import math
import sys

import bpy
from mathutils import Vector

# bone name → (head, tail, parent), a standing figure about 1.8 units tall, facing -Y
BONES = {
    "hips": ((0, 0, 0.95), (0, 0, 1.15), None),
    "spine": ((0, 0, 1.15), (0, 0, 1.45), "hips"),
    "neck": ((0, 0, 1.45), (0, 0, 1.58), "spine"),
    "head": ((0, 0, 1.58), (0, 0, 1.82), "neck"),
    "upper_arm.L": ((0.2, 0, 1.42), (0.45, 0, 1.42), "spine"),
    "forearm.L": ((0.45, 0, 1.42), (0.7, 0, 1.42), "upper_arm.L"),
    "upper_arm.R": ((-0.2, 0, 1.42), (-0.45, 0, 1.42), "spine"),
    "forearm.R": ((-0.45, 0, 1.42), (-0.7, 0, 1.42), "upper_arm.R"),
    "thigh.L": ((0.1, 0, 0.95), (0.1, 0, 0.5), "hips"),
    "shin.L": ((0.1, 0, 0.5), (0.1, 0, 0.05), "thigh.L"),
    "thigh.R": ((-0.1, 0, 0.95), (-0.1, 0, 0.5), "hips"),
    "shin.R": ((-0.1, 0, 0.5), (-0.1, 0, 0.05), "thigh.R"),
}
# bone → pose rotation (degrees about the bone's own X and Z axes): a wave and a step
POSE = {
    "upper_arm.L": (-50, 0),
    "forearm.L": (-60, 0),
    "upper_arm.R": (60, 0),
    "forearm.R": (20, 0),
    "thigh.L": (25, -15),
    "shin.L": (-35, 0),
    "thigh.R": (-15, 10),
}
LIMB_RADIUS = {"hips": 0.16, "spine": 0.17, "neck": 0.05, "head": 0.12}


def build_armature(scene):
    armature = bpy.data.objects.new("Figure", bpy.data.armatures.new("Figure"))
    scene.collection.objects.link(armature)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    for name, (head, tail, parent) in BONES.items():
        bone = armature.data.edit_bones.new(name)
        bone.head, bone.tail = head, tail
        if parent:
            bone.parent = armature.data.edit_bones[parent]
            bone.use_connect = Vector(head) == armature.data.edit_bones[parent].tail
    bpy.ops.object.mode_set(mode="POSE")
    for name, (x, z) in POSE.items():
        bone = armature.pose.bones[name]
        bone.rotation_mode = "XYZ"
        bone.rotation_euler = (math.radians(x), 0.0, math.radians(z))
    bpy.ops.object.mode_set(mode="OBJECT")
    return armature


def add_body(scene, armature):
    """One capsule-like mesh per bone, parented to the bone so it follows the pose."""
    for name, (head, tail, _parent) in BONES.items():
        length = (Vector(tail) - Vector(head)).length
        radius = LIMB_RADIUS.get(name, 0.06)
        if name == "head":
            bpy.ops.mesh.primitive_uv_sphere_add(radius=radius)
        else:
            bpy.ops.mesh.primitive_cylinder_add(radius=radius, depth=length)
        part = bpy.context.active_object
        part.name = f"Body {name}"
        # A bone child sits at the bone's tail, Y along the bone: centre it on the bone.
        part.parent, part.parent_type, part.parent_bone = armature, "BONE", name
        part.location = (0.0, -length / 2.0, 0.0)
        part.rotation_euler = (math.radians(90), 0.0, 0.0)
        bpy.ops.object.shade_smooth()


def add_props(scene):
    bpy.ops.mesh.primitive_plane_add(size=12, location=(0, 2, 0))
    bpy.context.active_object.name = "Ground"
    bpy.ops.mesh.primitive_cube_add(size=0.8, location=(1.4, 1.0, 0.4), rotation=(0, 0, math.radians(30)))
    bpy.context.active_object.name = "Crate"
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.45, location=(-1.3, 0.8, 0.45))
    bpy.context.active_object.name = "Ball"
    bpy.ops.object.shade_smooth()
    bpy.ops.mesh.primitive_cone_add(radius1=0.6, depth=2.2, location=(-2.0, 3.5, 1.1))
    bpy.context.active_object.name = "Tree"


def add_camera_and_light(scene):
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.location = (0.0, -5.5, 1.6)
    camera.rotation_euler = (math.radians(84), 0, 0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    scene.collection.objects.link(sun)


def build_demo_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 512
    scene.render.engine = "CYCLES"  # the color pass is this render: a few samples keep it quick on a CPU
    scene.cycles.samples = 16
    add_props(scene)
    armature = build_armature(scene)
    add_body(scene, armature)
    add_camera_and_light(scene)
    return scene


if __name__ == "__main__":
    build_demo_scene()
    bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
    print(sys.argv[1])
