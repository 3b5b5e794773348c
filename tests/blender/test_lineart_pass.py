"""Line art and canny from the geometry of known scenes, probed at known pixels."""
import math

import bpy
import numpy as np
import pytest

from scenes import add_camera, add_cube, pixel_of, set_resolution
from sd_blender.core.pass_options import PassOptions
from sd_blender.scene.passes import render_control_images

SIZE = 128


def lines(scene, kind="lineart", options=None):
    return render_control_images(scene, [kind], SIZE, SIZE, options)[kind]


def near(image, pixel, radius=1):
    """The pixels within radius of pixel."""
    row, column = pixel
    return image[row - radius:row + radius + 1, column - radius:column + radius + 1]


@pytest.fixture
def cube_scene(empty_scene):
    """A cube turned 45 degrees about Z: two faces seen, a vertical crease down the middle."""
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    add_cube("Cube", rotation=(0.0, 0.0, math.radians(45)))
    return empty_scene


def test_white_at_silhouette_and_crease_black_on_faces_and_background(cube_scene):
    image = lines(cube_scene)
    assert image.dtype == np.uint8 and set(np.unique(image)) == {0, 255}
    crease = pixel_of(cube_scene, (0.0, -math.sqrt(2), 0.0))
    silhouette = pixel_of(cube_scene, (-math.sqrt(2), 0.0, 0.0))
    assert near(image, crease).max() == 255
    assert near(image, silhouette).max() == 255
    for face_centre in ((-0.7, -0.7, 0.0), (0.7, -0.7, 0.0)):
        assert near(image, pixel_of(cube_scene, face_centre), radius=4).max() == 0
    assert image[:10, :10].max() == 0


def test_lines_are_one_or_two_pixels_wide(cube_scene):
    row, column = pixel_of(cube_scene, (0.0, -math.sqrt(2), 0.0))
    across_crease = slice(column - 6, column + 7)
    assert np.count_nonzero(lines(cube_scene)[row, across_crease]) == 2
    assert np.count_nonzero(lines(cube_scene, "canny")[row, across_crease]) == 1


def test_a_floor_seen_at_a_grazing_angle_has_no_lines(empty_scene):
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    bpy.ops.mesh.primitive_plane_add(size=200.0, location=(0.0, 90.0, -1.0))
    image = lines(empty_scene)
    horizon_row, _column = pixel_of(empty_scene, (0.0, 190.0, -1.0))
    assert image[horizon_row - 1:horizon_row + 2].max() == 255  # the far edge of the floor
    assert image[horizon_row + 4:].max() == 0


def test_canny_uses_the_users_threshold(empty_scene):
    """An icosahedron's neighbouring faces are 41.8 degrees apart: below the default 45."""
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene, location=(0.0, -6.0, 0.0))
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=1, radius=1.5)
    inside = slice(54, 74)
    assert lines(empty_scene, "canny")[inside, inside].max() == 0
    sensitive = lines(empty_scene, "canny", PassOptions(canny_threshold=0.4))
    assert sensitive[inside, inside].max() == 255
    assert lines(empty_scene, "lineart", PassOptions(canny_threshold=0.4))[inside, inside].max() == 0


def test_touching_objects_are_separated_by_a_line(empty_scene):
    """Two boxes side by side at the same depth, faces flush: only the object boundary differs."""
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    add_cube("Left", size=1.0, location=(-0.5, 0.0, 0.0))
    add_cube("Right", size=1.0, location=(0.5, 0.0, 0.0))
    image = lines(empty_scene)
    assert near(image, pixel_of(empty_scene, (0.0, -0.5, 0.0))).max() == 255
    assert near(image, pixel_of(empty_scene, (-0.25, -0.5, 0.0)), radius=3).max() == 0
