"""A shot for the motion pass tests, frames 1 and 2: a glowing textured wall, a cube that moves and
turns, a column bent by an armature, a camera that pans and dollies; and the motion each pixel's
surface really had, computed from the objects' and bones' transforms (not from triangles).

Every surface glows (emission, Standard view transform), so its colour does not depend on the
light. The textures use Generated coordinates, which stay on a surface an armature deforms.
"""
import math

import bmesh
import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from scenes import add_camera, set_resolution
from sd_blender.scene.passes import render_geometry

WIDTH, HEIGHT = 160, 120
JOINT_Z = 0.0  # where the column's two bones meet
BLEND_BAND = 0.26  # the column's triangles within this of the joint are blended between both bones


def glowing_material(name, scale):
    """Emission coloured by waves of the Generated coordinates (smooth, so a bilinear warp is fair)."""
    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    coordinates = nodes.new("ShaderNodeTexCoord")
    wave = nodes.new("ShaderNodeTexWave")
    wave.inputs["Scale"].default_value = scale
    wave.inputs["Distortion"].default_value = 0.0
    mix = nodes.new("ShaderNodeCombineXYZ")
    links.new(coordinates.outputs["Generated"], wave.inputs["Vector"])
    separate = nodes.new("ShaderNodeSeparateXYZ")
    links.new(coordinates.outputs["Generated"], separate.inputs[0])
    links.new(wave.outputs["Fac"], mix.inputs[0])
    links.new(separate.outputs["X"], mix.inputs[1])
    links.new(separate.outputs["Z"], mix.inputs[2])
    emission = nodes.new("ShaderNodeEmission")
    links.new(mix.outputs[0], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    return material


def keyframes(owner, path, values):
    """owner.<path> = value at frames 1, 2, ..."""
    for frame, value in enumerate(values, start=1):
        setattr(owner, path, value)
        owner.keyframe_insert(path, frame=frame)


def add_wall(scene):
    """A wall 4 units behind the origin; the top of the frame sees nothing above it."""
    bpy.ops.mesh.primitive_plane_add(size=1.0, location=(0.0, 4.0, -1.75), rotation=(math.radians(90), 0.0, 0.0))
    wall = bpy.context.active_object
    wall.name, wall.scale = "Wall", (16.0, 8.5, 1.0)
    wall.data.materials.append(glowing_material("Wall", 3.0))
    return wall


def add_moving_cube(turn=True, move=True):
    bpy.ops.mesh.primitive_cube_add(size=1.4, location=(-2.2, -1.0, -0.5))
    cube = bpy.context.active_object
    cube.name = "Cube"
    cube.data.materials.append(glowing_material("Cube", 0.4))
    if move:
        keyframes(cube, "location", [(-2.2, -1.0, -0.5), (-1.9, -1.0, -0.25)])
    if turn:
        keyframes(cube, "rotation_euler", [(0.3, 0.0, 0.0), (0.3, 0.0, math.radians(9.0))])
    return cube


def _column_mesh():
    """A square column 0.8 wide from z = −1.5 to 1.5, with rings of vertices up its height."""
    mesh = bpy.data.meshes.new("Column")
    built = bmesh.new()
    rings = []
    for z in np.linspace(-1.5, 1.5, 13):
        rings.append([built.verts.new((x, y, z)) for x, y in ((-0.4, -0.4), (0.4, -0.4), (0.4, 0.4), (-0.4, 0.4))])
    for lower, upper in zip(rings, rings[1:]):
        for i in range(4):
            built.faces.new((lower[i], lower[(i + 1) % 4], upper[(i + 1) % 4], upper[i]))
    built.faces.new(rings[0][::-1])
    built.faces.new(rings[-1])
    built.to_mesh(mesh)
    built.free()
    return mesh


def add_bent_column(scene, location=(1.8, -0.5, 0.0)):
    """A column skinned to two bones meeting at z = 0 (each vertex wholly on one): the upper bone
    swings sideways, 10 then 22 degrees."""
    armature = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    scene.collection.objects.link(armature)
    armature.location = location
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    lower = armature.data.edit_bones.new("Lower")
    lower.head, lower.tail = (0.0, 0.0, -1.5), (0.0, 0.0, JOINT_Z)
    upper = armature.data.edit_bones.new("Upper")
    upper.head, upper.tail, upper.parent = (0.0, 0.0, JOINT_Z), (0.0, 0.0, 1.5), lower
    bpy.ops.object.mode_set(mode="OBJECT")
    column = bpy.data.objects.new("Column", _column_mesh())
    scene.collection.objects.link(column)
    column.parent = armature
    column.data.materials.append(glowing_material("Column", 0.3))
    groups = {name: column.vertex_groups.new(name=name) for name in ("Lower", "Upper")}
    for vertex in column.data.vertices:
        groups["Upper" if vertex.co.z > JOINT_Z else "Lower"].add([vertex.index], 1.0, "REPLACE")
    column.modifiers.new("Armature", "ARMATURE").object = armature
    bone = armature.pose.bones["Upper"]
    bone.rotation_mode = "XYZ"
    keyframes(bone, "rotation_euler", [(0.0, 0.0, math.radians(10.0)), (0.0, 0.0, math.radians(22.0))])
    return armature


def motion_shot(scene, pan=True, dolly=True, cube=True, move=True, turn=True, column=True):
    """The test shot at frames 1 and 2 (the scene is left at frame 2)."""
    set_resolution(scene, WIDTH, HEIGHT)
    camera = add_camera(scene)
    if pan:
        keyframes(camera, "rotation_euler", [(math.radians(90), 0.0, math.radians(1.5)), (math.radians(90), 0.0, 0.0)])
    if dolly:
        keyframes(camera, "location", [(-0.3, -10.4, 0.15), (0.0, -10.0, 0.0)])
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.cycles.filter_width = 0.01  # each pixel the value at its centre
    scene.view_settings.view_transform = "Standard"
    scene.world = None
    add_wall(scene)
    if cube:
        add_moving_cube(turn=turn, move=move)
    if column:
        add_bent_column(scene)
    scene.frame_set(2)
    return scene


def _bone_deform(scene, bone_name):
    """World matrix taking a rest position of the column to where the bone's pose puts it now."""
    rig = scene.objects["Rig"]
    bone = rig.pose.bones[bone_name]
    return rig.matrix_world @ bone.matrix @ bone.bone.matrix_local.inverted() @ rig.matrix_world.inverted()


def _transforms(scene):
    """The matrices that move each object's surface at the current frame."""
    transforms = {}
    if "Cube" in scene.objects:
        transforms["Cube"] = scene.objects["Cube"].matrix_world.copy()
    if "Rig" in scene.objects:
        transforms["Upper"] = _bone_deform(scene, "Upper").copy()
    return transforms


def _point_before(scene, name, point, now, before):
    """Where a point seen on object `name` now was one frame earlier (`now`, `before`: _transforms
    of both frames), or None where the answer is not rigid (the column's triangles blended across
    the joint)."""
    if name == "Wall":
        return point
    if name == "Cube":
        return before["Cube"] @ now["Cube"].inverted() @ point
    rest = now["Upper"].inverted() @ point  # the rest position if the point is on the upper bone
    height = (scene.objects["Rig"].matrix_world.inverted() @ rest).z - JOINT_Z
    if abs(height) < BLEND_BAND:
        return None
    return before["Upper"] @ rest if height > 0 else point  # the lower bone does not move


def _pixel_rays(camera, scene):
    """Camera-space directions through every pixel centre, z = −1."""
    top_right, _, bottom_left, _ = camera.data.view_frame(scene=scene)
    depth = -top_right.z
    u = (np.arange(WIDTH) + 0.5) / WIDTH
    v = (np.arange(HEIGHT) + 0.5) / HEIGHT
    x = (bottom_left.x + u * (top_right.x - bottom_left.x)) / depth
    y = (top_right.y - v * (top_right.y - bottom_left.y)) / depth
    return np.stack(np.broadcast_arrays(x[None, :], y[:, None], -np.ones((HEIGHT, 1))), axis=-1)


def true_motion(scene):
    """(H, W, 2) motion from the transforms, NaN where nothing was hit and in the column's joint
    band; and the name of the object seen at each pixel ("" for none)."""
    frame = scene.frame_current
    scene.frame_set(frame - 1)
    before = _transforms(scene)
    scene.frame_set(frame)
    now = _transforms(scene)
    geometry = render_geometry(scene, WIDTH, HEIGHT)
    camera = np.array(scene.camera.matrix_world)
    world = _pixel_rays(scene.camera, scene) * geometry.distance[..., None] @ camera[:3, :3].T + camera[:3, 3]
    names = np.full((HEIGHT, WIDTH), "", object)
    points_before = {}
    for row, column in zip(*np.nonzero(geometry.hits)):
        names[row, column] = name = geometry.surfaces[geometry.surface_ids[row, column]].object.name
        point = _point_before(scene, name, Vector(world[row, column]), now, before)
        if point is not None:
            points_before[row, column] = point
    scene.frame_set(frame - 1)
    motion = np.full((HEIGHT, WIDTH, 2), np.nan)
    for (row, column), point in points_before.items():
        x, y, _ = world_to_camera_view(scene, scene.camera, point)
        motion[row, column] = (x * WIDTH - (column + 0.5), (1.0 - y) * HEIGHT - (row + 0.5))
    scene.frame_set(frame)
    return motion, names
