"""The normal pass (normalbae convention) of known scenes, probed at known pixels.

The camera looks along world +Y, so for an unrotated camera world −X is image left (red),
world +Z is up (green) and world −Y faces the viewer (blue).
"""
import math

import bpy
import numpy as np
import pytest

from scenes import (
    add_camera, add_cube, add_smooth_sphere, instance_collection, instance_with_geometry_nodes, pixel_of,
    set_resolution,
)
from sd_blender.scene.passes import render_control_images, render_pass_buffers

SIZE = 96
BACKGROUND = (128, 128, 255)


def normal_image(scene):
    return render_control_images(scene, ["normal"], SIZE, SIZE)["normal"]


@pytest.fixture
def sphere_scene(empty_scene):
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    add_smooth_sphere()
    return empty_scene


def test_a_sphere_faces_the_viewer_in_the_middle_left_is_red_top_is_green(sphere_scene):
    image = normal_image(sphere_scene).astype(int)
    centre = image[pixel_of(sphere_scene, (0.0, -1.0, 0.0))]
    assert abs(centre - BACKGROUND).max() <= 8
    left = image[pixel_of(sphere_scene, (-0.85, -0.5, 0.0))]
    assert left[0] > 220 and left[0] > left[1] + 80
    top = image[pixel_of(sphere_scene, (0.0, -0.5, 0.85))]
    assert top[1] > 220 and top[1] > top[0] + 80
    right = image[pixel_of(sphere_scene, (0.85, -0.5, 0.0))]
    assert right[0] < 40
    assert tuple(image[2, 2]) == BACKGROUND


def test_normals_are_unit_vectors_in_camera_space(sphere_scene):
    normals = render_pass_buffers(sphere_scene, ["normal"], SIZE, SIZE)["normal"]
    centre = normals[pixel_of(sphere_scene, (0.0, -1.0, 0.0))]
    assert np.linalg.norm(centre) == pytest.approx(1.0, abs=1e-5)
    assert centre[2] > 0.99  # +Z of camera space: toward the viewer
    assert not normals[2, 2].any()


def turn_the_rig_a_quarter(scene):
    """The camera parented to an empty turned 90 degrees about Z: it looks along world −X."""
    rig = bpy.data.objects.new("Rig", None)
    rig.rotation_euler = (0.0, 0.0, math.radians(90))
    scene.collection.objects.link(rig)
    scene.camera.parent = rig


def track_the_sphere_from_the_side(scene):
    """The camera at +X aimed at the sphere by a constraint; its own rotation stays zero."""
    camera = scene.camera
    camera.location, camera.rotation_euler = (10.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    constraint = camera.constraints.new("TRACK_TO")
    constraint.target = bpy.data.objects["Sphere"]
    constraint.track_axis, constraint.up_axis = "TRACK_NEGATIVE_Z", "UP_Y"


@pytest.mark.parametrize("move_camera", [turn_the_rig_a_quarter, track_the_sphere_from_the_side])
def test_a_parented_or_constrained_camera_still_gives_camera_space_normals(sphere_scene, move_camera):
    straight = normal_image(sphere_scene).astype(int)
    move_camera(sphere_scene)
    moved = normal_image(sphere_scene).astype(int)
    assert np.abs(moved - straight).max() <= 2  # the sphere looks the same from every side


@pytest.fixture
def cube_scene(empty_scene):
    """A cube turned 45 degrees: its left face looks left-forward, its right face right-forward."""
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    cube = add_cube("Cube", rotation=(0.0, 0.0, math.radians(45)))
    return empty_scene, cube


def row_across_left_face(scene):
    """Pixels from near the left edge to near the crease of the cube's left face, at mid height."""
    row, start = pixel_of(scene, (-1.2, -0.2, 0.0))
    _row, stop = pixel_of(scene, (-0.2, -1.2, 0.0))
    return row, slice(start, stop)


def test_a_flat_shaded_face_has_one_colour(cube_scene):
    scene, _cube = cube_scene
    row, columns = row_across_left_face(scene)
    face = normal_image(scene)[row, columns].astype(int)
    assert abs(face - (218, 128, 218)).max() <= 2  # (−0.71, 0, 0.71) in camera space


def test_a_subdivision_surface_shows_smooth_normals_varying_across_a_face(cube_scene):
    scene, cube = cube_scene
    subdivision = cube.modifiers.new("Subdivision", "SUBSURF")
    subdivision.levels = subdivision.render_levels = 3
    bpy.ops.object.shade_smooth()
    row, columns = row_across_left_face(scene)
    face = normal_image(scene)[row, columns].astype(int)
    assert face[:, 0].max() - face[:, 0].min() > 60  # red sweeps from the rounded edge to the corner


def test_custom_split_normals_show(empty_scene):
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    bpy.ops.mesh.primitive_plane_add(size=2.0, rotation=(math.radians(90), 0.0, 0.0))  # faces the camera
    plane = bpy.context.active_object
    tilted_up = (0.0, math.sqrt(0.5), math.sqrt(0.5))  # in object space; (0, −0.71, 0.71) in the world
    plane.data.normals_split_custom_set_from_vertices([tilted_up] * len(plane.data.vertices))
    pixel = normal_image(empty_scene)[pixel_of(empty_scene, (0.0, 0.0, 0.0))].astype(int)
    assert abs(pixel - (128, 218, 218)).max() <= 2


def test_a_surface_seen_from_behind_faces_the_viewer(empty_scene):
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    # Its front faces up and away from the camera: the camera sees its back.
    bpy.ops.mesh.primitive_plane_add(size=2.0, rotation=(math.radians(-45), 0.0, 0.0))
    pixel = normal_image(empty_scene)[pixel_of(empty_scene, (0.0, 0.0, 0.0))].astype(int)
    assert abs(pixel - (128, 37, 218)).max() <= 2  # down and toward the viewer


def test_collection_and_geometry_nodes_instances_show(empty_scene):
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    source = add_cube("Crate", size=1.0, rotation=(0.0, 0.0, math.radians(45)))
    instance_collection(empty_scene, source, "Crate instance", (-2.0, 0.0, 0.0))
    holder = instance_with_geometry_nodes(empty_scene, source, "Crate scatter", (2.0, 0.0, 0.0))
    holder.rotation_euler = (0.0, 0.0, math.radians(45))
    image = normal_image(empty_scene).astype(int)
    for left_face in ((-2.25, -0.4, 0.0), (1.75, -0.4, 0.0)):
        assert abs(image[pixel_of(empty_scene, left_face)] - (218, 128, 218)).max() <= 2


def test_a_scene_other_than_the_windows_renders_too(sphere_scene):
    other = bpy.data.scenes.new("Other")
    for obj in sphere_scene.objects:
        other.collection.objects.link(obj)
    other.camera = sphere_scene.camera
    image = render_control_images(other, ["normal"], SIZE, SIZE)["normal"].astype(int)
    assert np.abs(image - normal_image(sphere_scene)).max() <= 1
