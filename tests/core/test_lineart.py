import numpy as np
import pytest

from sd_blender.core.lineart import DEFAULT_THRESHOLD, edge_strength, line_image

MISS = 1.0e10
FACING = (0.0, 0.0, 1.0)


def flat(shape, distance=5.0, normal=FACING, label=1):
    return np.full(shape, distance), np.broadcast_to(normal, shape + (3,)).copy(), np.full(shape, label)


def lines(distance, normals, labels, thin=False, threshold=DEFAULT_THRESHOLD):
    return line_image(edge_strength(distance, normals, labels, thin=thin), threshold)


def test_a_flat_face_has_no_lines():
    assert not lines(*flat((6, 6))).any()


def test_a_plane_at_a_grazing_angle_has_no_lines():
    # Distance of a tilted plane: inverse depth is linear down the image, depth is not.
    rows = np.arange(8)[:, None] * np.ones((1, 8))
    distance, normals, labels = flat((8, 8), normal=(0.0, 0.99, 0.14))
    distance = 1.0 / (0.5 - 0.06 * rows)
    assert distance[-1, 0] / distance[-2, 0] > 1.3  # neighbours 30 % apart
    assert not lines(distance, normals, labels).any()


def test_silhouette_against_background_is_two_pixels_wide_or_one_when_thin():
    distance, normals, labels = flat((4, 6))
    distance[:, 3:], normals[:, 3:], labels[:, 3:] = MISS, 0.0, -1
    assert (lines(distance, normals, labels)[:, 2:4] == 255).all()
    assert not lines(distance, normals, labels)[:, [0, 1, 4, 5]].any()
    thin = lines(distance, normals, labels, thin=True)
    assert (thin[:, 2] == 255).all() and not thin[:, 3:].any()  # on the object, not the background


def test_object_boundary_at_the_same_depth_is_a_line():
    distance, normals, labels = flat((4, 6))
    labels[:, 3:] = 2
    assert (lines(distance, normals, labels)[:, 2:4] == 255).all()


def test_crease_shows_above_the_threshold_angle_only():
    distance, normals, labels = flat((4, 6))
    normals[:, 3:] = (np.sin(np.radians(60)), 0.0, np.cos(np.radians(60)))
    assert (lines(distance, normals, labels)[:, 2:4] == 255).all()
    normals[:, 3:] = (np.sin(np.radians(30)), 0.0, np.cos(np.radians(30)))
    assert not lines(distance, normals, labels).any()
    assert (lines(distance, normals, labels, threshold=0.25)[:, 2:4] == 255).all()


def test_a_step_within_one_object_shows_on_the_nearer_side_when_thin():
    distance, normals, labels = flat((4, 8))
    distance[:, 4:] = 6.0  # 20 % farther
    assert (lines(distance, normals, labels)[:, 3:5] == 255).all()
    thin = lines(distance, normals, labels, thin=True)
    assert (thin[:, 3] == 255).all() and not thin[:, 4:].any()
    distance[:, 4:] = 5.1  # 2 %: below the default threshold
    assert not lines(distance, normals, labels).any()


def test_threshold_must_be_a_fraction():
    with pytest.raises(ValueError, match="threshold"):
        line_image(np.zeros((2, 2)), 0.0)
