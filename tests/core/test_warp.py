"""Warping by the motion pass's convention: pixel (x, y) of frame N shows what was at
(x + X, y + Y) in frame N−1, x the column, y the row (downward), pixel centres at integers."""
import numpy as np
import pytest

from sd_blender.core.warp import match_colour_statistics, read_motion, warp, warping_error, write_motion


def smooth_colour(x, y):
    """A smooth colour image evaluated at any (x, y), 0–255."""
    return np.stack([np.sin(x / 7 + c) * np.cos(y / 9 - c) for c in range(3)], axis=-1) * 100 + 128


def constant_motion(height, width, x, y):
    return np.broadcast_to(np.array([x, y], np.float32), (height, width, 2)).copy()


def test_integer_shift_is_exact():
    previous = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    warped, inside = warp(previous, constant_motion(20, 30, 3, -2))
    # Pixel (x, y) shows previous pixel (x + 3, y - 2): row y - 2, column x + 3.
    np.testing.assert_array_equal(warped[2:, :27], previous[:-2, 3:])
    assert inside[2:, :27].all() and not inside[:2].any() and not inside[:, 27:].any()
    assert warped.dtype == np.float32 and warped.shape == previous.shape


def test_half_pixel_samples_halfway_between_columns():
    previous = np.zeros((4, 5), np.float32)
    previous[:, 2] = 100  # one bright column, x = 2
    warped, inside = warp(previous, constant_motion(4, 5, 0.5, 0))
    # Columns 1 and 2 sample x = 1.5 and 2.5: halfway to the bright column. Adding 0.5 to the
    # sample point would give 100 at column 2 only; swapping X and Y would move along rows.
    np.testing.assert_allclose(warped[0], [0, 50, 50, 0, 0])
    assert inside[:, :4].all() and not inside[:, 4].any()
    warped_down, _ = warp(previous.T.copy(), constant_motion(5, 4, 0, 0.5))
    np.testing.assert_allclose(warped_down[:, 0], [0, 50, 50, 0, 0])


def test_outside_pixels_take_the_nearest_edge_value():
    previous = np.arange(12, dtype=np.float32).reshape(3, 4)
    warped, inside = warp(previous, constant_motion(3, 4, 10, -10))
    assert not inside.any()
    np.testing.assert_array_equal(warped, np.full((3, 4), previous[0, 3]))
    nan_motion = constant_motion(3, 4, np.nan, 0)
    assert not warp(previous, nan_motion)[1].any()


def test_rotated_image_warped_back_matches_inside():
    height, width = 48, 64
    rows, columns = np.indices((height, width), dtype=np.float64)
    centre_x, centre_y, angle = 30.0, 22.0, np.radians(4)
    # Frame N is frame N−1 rotated about the centre by -angle, so pixel (x, y) of N shows the point
    # of N−1 rotated by +angle from it.
    dx, dy = columns - centre_x, rows - centre_y
    source_x = centre_x + np.cos(angle) * dx - np.sin(angle) * dy
    source_y = centre_y + np.sin(angle) * dx + np.cos(angle) * dy
    previous, current = smooth_colour(columns, rows), smooth_colour(source_x, source_y)
    motion = np.stack((source_x - columns, source_y - rows), axis=-1)
    warped, inside = warp(previous, motion)
    interior = inside.copy()
    interior[[0, -1]] = interior[:, [0, -1]] = False
    assert interior.mean() > 0.7
    # Bilinear error on this smooth image is far below one 8-bit step.
    assert np.abs(warped - current)[interior].max() < 1.0


def test_warping_error_of_a_shift_with_an_offset_is_the_offset():
    previous = np.random.default_rng(2).integers(0, 200, (16, 24, 3), dtype=np.uint8)
    current = np.zeros_like(previous)
    current[:, :-4] = previous[:, 4:] + 7
    error, compared = warping_error(current, previous, constant_motion(16, 24, 4, 0), np.zeros((16, 24), bool))
    assert error == pytest.approx(7)
    assert compared == pytest.approx(20 / 24)


def test_occluded_pixels_are_left_out():
    previous = np.full((10, 10), 50, np.uint8)
    current = previous.copy()
    current[:, :3] = 250  # differs only where the surface was hidden
    occluded = np.zeros((10, 10), bool)
    occluded[:, :3] = True
    motion = constant_motion(10, 10, 0, 0)
    assert warping_error(current, previous, motion, occluded) == (0.0, pytest.approx(0.7))
    assert warping_error(current, previous, motion)[0] == pytest.approx(200 * 0.3)
    assert warping_error(current, previous, motion, np.ones((10, 10), bool)) == (None, 0.0)


def test_shapes_must_agree():
    with pytest.raises(ValueError):
        warp(np.zeros((4, 5)), np.zeros((5, 4, 2)))
    with pytest.raises(ValueError):
        warping_error(np.zeros((4, 5, 3)), np.zeros((4, 5)), np.zeros((4, 5, 2)))


def test_motion_round_trips_through_its_exr(tmp_path):
    motion = np.random.default_rng(3).normal(0, 3, (9, 11, 2)).astype(np.float32)
    write_motion(tmp_path / "motion_0001.exr", motion)
    np.testing.assert_array_equal(read_motion(tmp_path / "motion_0001.exr"), motion)


def test_colour_statistics_move_to_the_reference():
    rng = np.random.default_rng(4)
    image = rng.normal(80, 10, (32, 32, 3)).clip(0, 255).astype(np.uint8)
    reference = rng.normal([150, 100, 60], [30, 5, 20], (32, 32, 3)).clip(0, 255).astype(np.uint8)
    matched = match_colour_statistics(image, reference)
    assert matched.dtype == np.uint8
    np.testing.assert_allclose(matched.mean(axis=(0, 1)), reference.mean(axis=(0, 1)), atol=0.6)
    np.testing.assert_allclose(matched.std(axis=(0, 1)), reference.std(axis=(0, 1)), rtol=0.05)
    flat = np.full((4, 4, 3), 10, np.uint8)
    assert (match_colour_statistics(flat, reference) == np.rint(reference.mean(axis=(0, 1)))).all()
