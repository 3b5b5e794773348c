"""Known scenes built with bpy for the Blender tests: objects at known distances from a camera."""
import math

import bpy


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
