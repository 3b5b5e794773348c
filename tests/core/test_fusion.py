"""Rasterising and fusing views into a UV texture (sd_blender.core.raster, .fusion), against
scenes small enough to compute by hand: a unit square seen straight on by a pinhole camera."""
import math

import numpy as np
import pytest

from sd_blender.core import fusion
from sd_blender.core.raster import overlap_count, rasterize

SIZE = 64


def camera_at(distance, size=SIZE, fov=60.0, angle=0.0):
    """A camera `distance` from the origin looking at it, turned `angle` degrees about Y."""
    turn = math.radians(angle)
    rotation = np.array([[math.cos(turn), 0, math.sin(turn)], [0, 1, 0], [-math.sin(turn), 0, math.cos(turn)]])
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = rotation
    camera_to_world[:3, 3] = rotation @ np.array([0, 0, distance])
    return fusion.Camera(np.linalg.inv(camera_to_world), fusion.perspective(math.radians(fov), size, size, 0.1, 100.0), size, size)


def unit_square(z=0.0):
    """Two triangles spanning [-0.5, 0.5]² at height z facing +Z, UV = position + 0.5."""
    corners = np.array([[[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5]], [[-0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]])
    positions = np.concatenate([corners, np.full((2, 3, 1), z)], axis=2)
    normals = np.tile([0.0, 0.0, 1.0], (2, 3, 1))
    return fusion.Mesh(corners + 0.5, positions, normals)


def distance_map(mesh, camera):
    """What a render would see: the mesh's own distances."""
    return fusion.distance_alone(mesh, camera)


def uv_colour(uv):
    """A smooth colour per UV, for checking where samples land."""
    return np.stack([uv[..., 0], uv[..., 1], 0.5 + 0.0 * uv[..., 0]], axis=-1)


def test_rasterize_covers_pixel_centres_inside():
    square = np.array([[[1, 1], [5, 1], [5, 5]], [[1, 1], [5, 5], [1, 5]]], float)
    coverage = rasterize(square, 8, 8)
    expected = np.zeros((8, 8), bool)
    expected[1:5, 1:5] = True
    assert (coverage.covered == expected).all()
    assert np.allclose(coverage.barycentric[coverage.covered].sum(axis=1), 1.0)


def test_nearest_triangle_wins_whatever_the_order():
    triangle = np.array([[0, 0], [8, 0], [0, 8]], float)
    coverage = rasterize(np.stack([triangle, triangle]), 8, 8, depth=np.array([[2.0] * 3, [1.0] * 3]))
    assert set(np.unique(coverage.triangle[coverage.covered])) == {1}
    assert np.allclose(coverage.depth[coverage.covered], 1.0)


def test_a_large_triangle_is_rasterised_whole():
    coverage = rasterize(np.array([[[0, 0], [300, 0], [0, 300]]], float), 300, 300)
    assert coverage.covered.sum() == 300 * 301 // 2  # centres on or below the diagonal x + y = 300
    assert coverage.covered[0, 0] and not coverage.covered[299, 299]


def test_perspective_correct_interpolation_on_a_receding_plane():
    mesh = unit_square()
    camera = camera_at(1.2, angle=50.0)
    view = fusion.view_map(mesh, camera, distance_map(mesh, camera))
    # The UV at a pixel is where that pixel's ray meets the plane z = 0.
    y, x = np.nonzero(view.visible)
    ndc = np.stack([(x + 0.5) / SIZE * 2 - 1, 1 - (y + 0.5) / SIZE * 2], axis=1)
    inverse = np.linalg.inv(camera.projection)
    near = np.c_[ndc, -np.ones(len(x)), np.ones(len(x))] @ inverse.T
    direction = near[:, :3] / near[:, 3:]
    camera_to_world = np.linalg.inv(camera.world_to_view)
    origin = camera_to_world[:3, 3]
    world_direction = direction @ camera_to_world[:3, :3].T
    t = -origin[2] / world_direction[:, 2]
    hit = origin + t[:, None] * world_direction
    assert np.abs(view.uvs[y, x] - (hit[:, :2] + 0.5)).max() < 1e-4


def test_overlapping_islands_are_found():
    mesh = unit_square()
    assert fusion.usable_for_baking(mesh) is None
    stacked = fusion.Mesh(np.concatenate([mesh.uvs, mesh.uvs]), *(np.concatenate([a, a]) for a in (mesh.positions, mesh.normals)))
    assert fusion.usable_for_baking(stacked) == "its UV islands overlap"
    outside = fusion.Mesh(mesh.uvs * 2, mesh.positions, mesh.normals)
    assert "outside" in fusion.usable_for_baking(outside)
    shared_edge = overlap_count(mesh.uv_pixels(SIZE), SIZE, SIZE)
    assert shared_edge.max() == 1


def test_texels_carry_position_normal_and_area():
    surface = fusion.texel_surface(unit_square(), SIZE)
    assert len(surface.texels) == SIZE * SIZE
    y, x = np.divmod(surface.texels, SIZE)
    assert np.allclose(surface.positions[:, 0], (x + 0.5) / SIZE - 0.5, atol=1e-6)
    assert np.allclose(surface.positions[:, 1], 0.5 - (y + 0.5) / SIZE, atol=1e-6)
    assert np.allclose(surface.normals, [0, 0, 1])
    assert surface.areas.sum() == pytest.approx(1.0, rel=1e-5)


def test_a_straight_view_fuses_back_into_the_texture():
    mesh, camera = unit_square(), camera_at(0.9)
    distance = distance_map(mesh, camera)
    view = fusion.view_map(mesh, camera, distance)
    image = np.where(view.visible[..., None], uv_colour(view.uvs), 0.0)
    surface = fusion.texel_surface(mesh, SIZE)
    samples = fusion.view_samples(surface, camera, distance)
    fused = fusion.fuse([image], [samples], [samples.weights(2.0, 85.0)])
    seen = fused.seen
    texel_uv = np.stack([(surface.texels % SIZE + 0.5) / SIZE, 1 - (surface.texels // SIZE + 0.5) / SIZE], axis=1)
    assert fusion.coverage(surface, seen) > 0.8
    assert np.abs(fused.colours[seen] - uv_colour(texel_uv[seen])).max() < 0.03


def test_hidden_and_back_facing_texels_are_not_visible():
    mesh, camera = unit_square(), camera_at(2.0)
    surface = fusion.texel_surface(mesh, SIZE)
    occluded = distance_map(mesh, camera)
    occluded[:, : SIZE // 2] = 1.0  # something at distance 1 hides the left half
    samples = fusion.view_samples(surface, camera, occluded)
    left = surface.positions[:, 0] < -0.05
    right = surface.positions[:, 0] > 0.05
    seen = np.isin(np.arange(len(surface.texels)), samples.texels)
    assert not seen[left].any()
    assert seen[right].all()
    behind = fusion.view_samples(surface, camera_at(2.0, angle=180.0), occluded)
    assert len(behind.texels) == 0


def test_weights_follow_the_angle_and_the_discard_angle():
    mesh = unit_square()
    surface = fusion.texel_surface(mesh, SIZE)
    for angle in (0.0, 60.0):
        camera = camera_at(3.0, angle=angle)
        samples = fusion.view_samples(surface, camera, distance_map(mesh, camera))
        middle = np.argmin(np.linalg.norm(surface.positions, axis=1))
        (at,) = np.flatnonzero(samples.texels == middle)  # the texel nearest the middle
        assert samples.cosines[at] == pytest.approx(math.cos(math.radians(angle)), abs=5e-3)
        weights = samples.weights(2.0, 80.0)
        assert weights[at] == pytest.approx(math.cos(math.radians(angle)) ** 2, abs=5e-3)
        assert (samples.weights(2.0, 45.0)[at] == 0) == (angle > 45)


def test_unseen_texels_are_filled_from_their_neighbours():
    image = np.zeros((16, 16, 3), np.float32)
    known = np.zeros((16, 16), bool)
    image[4:8, 4:8], known[4:8, 4:8] = [0.2, 0.4, 0.6], True
    filled = fusion.fill_unseen(image, known)
    assert np.allclose(filled, [0.2, 0.4, 0.6])


def test_the_texture_renders_back_into_the_view():
    mesh, camera = unit_square(), camera_at(1.5, angle=20.0)
    view = fusion.view_map(mesh, camera, distance_map(mesh, camera))
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    texture = uv_colour(np.stack([x / SIZE, 1 - y / SIZE], axis=-1))
    rendered = fusion.render_into_view(texture, view)
    expected = uv_colour(view.uvs)
    weights = view.weights(1.0, 85.0)
    assert weights.sum() > 0
    assert fusion.view_agreement(expected, rendered, weights) < 1.0
    assert (rendered[~view.visible] == 0).all()


def test_correspondence_is_uv_and_cosine_where_visible():
    mesh, camera = unit_square(), camera_at(1.5)
    view = fusion.view_map(mesh, camera, distance_map(mesh, camera))
    table = view.correspondence()
    assert table.shape == (SIZE, SIZE, 3) and table.dtype == np.float32
    assert (table[~view.visible] == 0).all()
    assert np.allclose(table[view.visible, 2], view.cosines[view.visible])


def test_dilation_extends_islands_by_their_edge_colours():
    image = np.zeros((32, 32, 3), np.float32)
    known = np.zeros((32, 32), bool)
    image[8:24, 8:16], known[8:24, 8:16] = [1.0, 0.0, 0.0], True
    image[8:24, 16:24], known[8:24, 16:24] = [0.0, 0.0, 1.0], True
    filled = fusion.fill_unseen(image, known, dilation=4)
    assert np.allclose(filled[8:24, 4], [1, 0, 0]) and np.allclose(filled[8:24, 27], [0, 0, 1])
    assert np.allclose(filled[4, 10], [1, 0, 0]) and np.allclose(filled[27, 21], [0, 0, 1])
    assert (filled.max(axis=-1) > 0).all(), "nothing is left black"


def test_views_are_fused_no_finer_than_twice_their_size_and_sized_up_smoothly():
    assert fusion.fusion_size(2048, 512) == 1024 and fusion.fusion_size(512, 512) == 512
    assert fusion.fusion_size(2048) == 2048
    x = (np.arange(64) + 0.5) / 64
    ramp = np.repeat(np.stack([x, 1 - x, 0.5 + 0 * x], axis=-1)[None], 64, axis=0).astype(np.float32)
    bigger = fusion.sized_up(ramp, 256)
    assert bigger.shape == (256, 256, 3)
    fine_x = (np.arange(256) + 0.5) / 256
    inside = (fine_x > 1 / 64) & (fine_x < 1 - 1 / 64)  # between the outermost texel centres
    assert np.allclose(bigger[100, inside, 0], fine_x[inside], atol=1e-5)
    assert np.allclose(bigger[:, :, 2], 0.5)
