import numpy as np
import pytest

from sd_blender.core.normal import BACKGROUND, camera_space_normals, normal_image, normals_from_angles


def test_angles_give_back_the_normal():
    normals = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.6, -0.8, 0.0], [-0.48, 0.36, -0.8]])
    polar, azimuth = np.arccos(normals[:, 2]), np.arctan2(normals[:, 1], normals[:, 0])
    assert normals_from_angles(polar, azimuth) == pytest.approx(normals, abs=1e-12)


def test_camera_space_follows_the_camera_rotation():
    # A camera turned 90 degrees about world Z: its X axis is world +Y, its Y axis world -X.
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert camera_space_normals([0.0, 1.0, 0.0], rotation) == pytest.approx([1.0, 0.0, 0.0])
    assert camera_space_normals([-1.0, 0.0, 0.0], rotation) == pytest.approx([0.0, 1.0, 0.0])


def test_left_is_red_up_is_green_toward_the_viewer_is_blue():
    normals = np.array([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    image = normal_image(normals)
    assert image.dtype == np.uint8 and image.shape == (1, 4, 3)
    assert list(image[0, 0]) == [255, 128, 128]  # facing left
    assert list(image[0, 1]) == [128, 255, 128]  # facing up
    assert list(image[0, 2]) == [128, 128, 255]  # facing the viewer
    assert list(image[0, 3]) == [0, 128, 128]  # facing right


def test_background_is_the_colour_of_a_surface_facing_the_camera():
    image = normal_image(np.zeros((2, 2, 3)))
    assert (image == BACKGROUND).all() and BACKGROUND == (128, 128, 255)
