"""Known scenes built with bpy for the Blender tests: objects at known distances from a camera."""
import math

import bpy
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector


def add_camera(scene, location=(0.0, -10.0, 0.0), rotation=(math.radians(90), 0.0, 0.0), orthographic_scale=None):
    """A 50 mm camera looking along +Y from y = -10 (the world origin is at the frame centre)."""
    data = bpy.data.cameras.new("Camera")
    if orthographic_scale is not None:
        data.type = "ORTHO"
        data.ortho_scale = orthographic_scale
    camera = bpy.data.objects.new("Camera", data)
    camera.location, camera.rotation_euler = location, rotation
    scene.collection.objects.link(camera)
    scene.camera = camera
    return camera


def set_resolution(scene, width, height):
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100


def sphere_and_wall_scene(scene, size=128):
    """A unit sphere at the origin (9 units from the camera) and, on the right half of the
    frame, a wall whose front face is 18 units away. The top-left corner sees nothing."""
    set_resolution(scene, size, size)
    add_camera(scene)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, location=(0.0, 0.0, 0.0))
    bpy.context.active_object.name = "Sphere"
    bpy.ops.mesh.primitive_cube_add(size=4.0, location=(4.0, 10.0, 0.0))
    bpy.context.active_object.name = "Wall"
    return scene


def pixel_of(scene, world_point):
    """(row from the top, column) of the pixel that sees a world point, at the scene's resolution."""
    bpy.context.view_layer.update()
    x, y, _depth = world_to_camera_view(scene, scene.camera, Vector(world_point))
    return int((1.0 - y) * scene.render.resolution_y), int(x * scene.render.resolution_x)


def add_cube(name, size=2.0, location=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0)):
    bpy.ops.mesh.primitive_cube_add(size=size, location=location, rotation=rotation)
    cube = bpy.context.active_object
    cube.name = name
    return cube


def add_smooth_sphere():
    """A smooth-shaded unit sphere named "Sphere" at the origin."""
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, segments=64, ring_count=32)
    bpy.ops.object.shade_smooth()
    bpy.context.active_object.name = "Sphere"


def instance_collection(scene, source, name, location):
    """An empty instancing a collection (not linked to the scene) that holds source."""
    collection = bpy.data.collections.new(f"{source.name} collection")
    for owner in list(source.users_collection):
        owner.objects.unlink(source)
    collection.objects.link(source)
    instance = bpy.data.objects.new(name, None)
    instance.instance_type, instance.instance_collection = "COLLECTION", collection
    instance.location = location
    scene.collection.objects.link(instance)
    return instance


def instance_with_geometry_nodes(scene, source, name, location):
    """A mesh object whose geometry nodes put one instance of source at its origin."""
    tree = bpy.data.node_groups.new(f"Instance {source.name}", "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = tree.nodes, tree.links
    source_info = nodes.new("GeometryNodeObjectInfo")
    source_info.inputs["Object"].default_value = source
    instance_on_points = nodes.new("GeometryNodeInstanceOnPoints")
    links.new(nodes.new("GeometryNodePoints").outputs["Geometry"], instance_on_points.inputs["Points"])
    links.new(source_info.outputs["Geometry"], instance_on_points.inputs["Instance"])
    links.new(instance_on_points.outputs["Instances"], nodes.new("NodeGroupOutput").inputs[0])
    holder = bpy.data.objects.new(name, bpy.data.meshes.new(name))
    holder.modifiers.new("Instances", "NODES").node_group = tree
    holder.location = location
    scene.collection.objects.link(holder)
    return holder
