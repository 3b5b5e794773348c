import numpy as np
import pytest

from sd_blender.core.depth import BACKGROUND_DISTANCE, HIT_FLOOR, auto_range, inverse_depth_image, merge_ranges

MISS = 1.0e10  # what Blender writes where nothing is hit


def test_nearest_is_white_farthest_is_floor_and_background_black():
    distance = np.array([[2.0, 4.0], [8.0, MISS]])
    image = inverse_depth_image(distance)
    assert image[0, 0] == 255
    assert image[1, 0] == round(HIT_FLOOR * 255)
    assert image[1, 1] == 0


def test_brightness_follows_inverse_depth():
    # 1/2, 1/4, 1/8 → relative (1/4 - 1/8) / (1/2 - 1/8) = 1/3 for the middle one
    image = inverse_depth_image(np.array([[2.0, 4.0, 8.0]]))
    assert image[0, 1] == round((HIT_FLOOR + (1 - HIT_FLOOR) / 3) * 255)


def test_fixed_range_is_stable_and_clamps():
    near_object = inverse_depth_image(np.array([[5.0, MISS]]), near=1.0, far=10.0)
    same_object_other_frame = inverse_depth_image(np.array([[5.0, 1.5]]), near=1.0, far=10.0)
    assert near_object[0, 0] == same_object_other_frame[0, 0]
    beyond = inverse_depth_image(np.array([[0.5, 50.0]]), near=1.0, far=10.0)
    assert beyond[0, 0] == 255 and beyond[0, 1] == round(HIT_FLOOR * 255)


def test_one_distance_everywhere_is_white():
    assert (inverse_depth_image(np.full((3, 3), 7.0)) == 255).all()


def test_nothing_hit_is_all_black_and_has_no_range():
    distance = np.full((4, 4), MISS)
    assert (inverse_depth_image(distance) == 0).all()
    assert auto_range(distance) is None


def test_non_finite_and_non_positive_are_background():
    image = inverse_depth_image(np.array([[np.inf, np.nan, 0.0, -1.0, BACKGROUND_DISTANCE * 2, 3.0]]))
    assert list(image[0]) == [0, 0, 0, 0, 0, 255]


def test_bad_fixed_range_names_the_problem():
    with pytest.raises(ValueError, match="near"):
        inverse_depth_image(np.array([[1.0]]), near=5.0, far=2.0)


def test_a_shot_range_covers_every_frame_and_skips_empty_frames():
    assert merge_ranges([(2.0, 9.0), None, (1.5, 7.0), (3.0, 12.0)]) == (1.5, 12.0)
    assert merge_ranges([None, None]) is None
