"""The motion pass from geometry (sd_blender.core.motion) against motion computed by hand: squares
moved, turned and seen by moving pinhole cameras, small enough to check every pixel."""
import math

import numpy as np

from sd_blender.core import fusion
from sd_blender.core.motion import FrameView, camera_coverage, clip_near, motion_pass

SIZE = 64
FOV = math.radians(60.0)
FOCAL = SIZE / 2 / math.tan(FOV / 2)  # pixels per unit at distance 1


def camera(position=(0.0, 0.0, 10.0), turn_degrees=0.0, size=SIZE):
    """A camera at `position` looking down −Z, turned about Y (a pan)."""
    turn = math.radians(turn_degrees)
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = [[math.cos(turn), 0, math.sin(turn)], [0, 1, 0], [-math.sin(turn), 0, math.cos(turn)]]
    camera_to_world[:3, 3] = position
    return fusion.Camera(np.linalg.inv(camera_to_world), fusion.perspective(FOV, size, size, 0.1, 100.0), size, size)


def square(half=2.0, z=0.0, offset=(0.0, 0.0)):
    """Two triangles spanning a square facing +Z."""
    x0, y0 = offset[0] - half, offset[1] - half
    x1, y1 = offset[0] + half, offset[1] + half
    return np.array([[[x0, y0, z], [x1, y0, z], [x1, y1, z]], [[x0, y0, z], [x1, y1, z], [x0, y1, z]]])


def view(corners, camera_=None):
    return FrameView(corners, camera_ or camera(), 0.1)


def same_triangles(count):
    return np.arange(count)


def test_a_square_moved_sideways_moves_by_focal_times_shift_over_distance():
    before, now = square(offset=(-0.25, 0.5)), square()
    result = motion_pass(view(now), view(before), same_triangles(2))
    seen = ~result.occluded
    # The point now at x was at x − 0.25 (left) and y + 0.5 (up: y down in pixels).
    assert np.allclose(result.motion[seen], [-0.25 * FOCAL / 10, -0.5 * FOCAL / 10], atol=1e-3)
    assert seen.sum() > 400  # the square is 22 pixels wide


def test_nothing_hit_and_new_triangles_are_occluded():
    now = np.concatenate([square(half=1.0), square(half=1.0, offset=(2.5, 0.0))])
    before = square(half=1.0)
    counterparts = np.array([0, 1, -1, -1])  # the second square did not exist in frame N−1
    result = motion_pass(view(now), view(before), counterparts)
    triangle, _, _ = camera_coverage(now, camera(), 0.1)
    assert result.occluded[triangle < 0].all()
    assert result.occluded[triangle >= 2].all()
    assert not result.occluded[(triangle >= 0) & (triangle < 2)].any()
    assert (result.motion[triangle < 0] == 0).all()


def test_a_pan_moves_every_pixel_of_a_still_scene_by_the_rotation():
    wall = square(half=30.0, z=-20.0)
    result = motion_pass(view(wall, camera(turn_degrees=0.0)), view(wall, camera(turn_degrees=2.0)), same_triangles(2))
    # In frame N−1 the camera was turned 2 degrees left (about +Y): a still point at angle a right of
    # the axis now was at angle a + 2 degrees then: x' = f · tan(a + 2°) with tan a = (x − c) / f.
    columns = np.arange(SIZE) + 0.5 - SIZE / 2
    angles = np.arctan(columns / FOCAL) + math.radians(2.0)
    expected_x = FOCAL * np.tan(angles) - columns
    row = SIZE // 2
    assert np.allclose(result.motion[row, :, 0], expected_x, atol=1e-3)
    # Pixels whose point was outside frame N−1 (past its right edge) are occluded.
    outside = columns + expected_x > SIZE / 2
    assert outside.sum() >= 2
    assert (result.occluded[row] == outside).all()


def test_a_point_hidden_in_the_previous_frame_is_occluded():
    back = square(half=4.0, z=-5.0)
    front_before, front_now = square(half=1.0, z=2.0), square(half=1.0, z=2.0, offset=(3.0, 0.0))
    before = np.concatenate([back, front_before])
    now = np.concatenate([back, front_now])
    result = motion_pass(view(now), view(before), same_triangles(4))
    triangle, _, _ = camera_coverage(now, camera(), 0.1)
    centre = SIZE // 2  # the back square's centre: hidden by the front square in N−1, seen in N
    assert triangle[centre, centre] in (0, 1) and result.occluded[centre, centre]
    # A back pixel far from both positions of the front square is seen in both frames.
    corner = (centre + int(3.5 * FOCAL / 15), centre - int(3.5 * FOCAL / 15))
    assert triangle[corner] in (0, 1) and not result.occluded[corner]
    # The front square is seen in both frames; it moved 3 units right (3 · f / 8 pixels).
    front = triangle >= 2
    assert not result.occluded[front].any()
    assert np.allclose(result.motion[front], [-3.0 * FOCAL / 8, 0.0], atol=1e-3)


def test_triangles_crossing_the_near_plane_are_clipped_not_dropped():
    floor = np.array([[[-5.0, -1.0, 15.0], [5.0, -1.0, 15.0], [0.0, -1.0, -30.0]]])  # runs behind the camera (z = 10)
    pieces, source, weights = clip_near(camera().to_view(floor.reshape(-1, 3)).reshape(-1, 3, 3), 0.1)
    view_floor = camera().to_view(floor.reshape(-1, 3)).reshape(-1, 3, 3)
    assert (pieces[:, :, 2] <= -0.1 + 1e-9).all()
    assert np.allclose(np.einsum("pkj,pjc->pkc", weights, view_floor[source]), pieces)
    triangle, weights, distance = camera_coverage(floor, camera(), 0.1)
    assert (triangle[SIZE - 1] == 0).all()  # the bottom row sees the floor just ahead of the camera
    points = np.einsum("nk,kc->nc", weights[triangle == 0], floor[0])
    assert np.allclose(points[:, 1], -1.0)
    assert np.allclose(camera().to_view(points)[:, 2], -distance[triangle == 0], rtol=1e-5)
