"""Where the surface seen at each pixel of frame N was in frame N−1: the motion pass, computed
from the evaluated geometry of both frames and both cameras (no pixels, no estimation).

Each frame's geometry is a list of triangles (world corners), the same triangles in the same
order in both frames where the surface exists in both. A triangle is rasterised in frame N's
camera (clipped at the camera's near plane, as a render clips it), and each pixel centre's point
on it (its perspective-correct barycentric weights) is taken to the same triangle in frame N−1 and
projected by frame N−1's camera:

    motion (X, Y) = where that point was in frame N−1 − the pixel centre, in pixels, x right, y down

so the pixel (x, y) of frame N shows what was at (x + X, y + Y) in frame N−1. A pixel is occluded
where nothing was hit, where its triangle has no counterpart in frame N−1, where the point was
outside frame N−1 or behind its camera, and where frame N−1 saw another surface in front of it.
"""
from dataclasses import dataclass

import numpy as np

from .raster import rasterize

# A point is hidden in frame N−1 when the nearest surface around it there (the least of the 2 × 2
# pixel centres around its position) is nearer by more than this (relative, plus an absolute
# margin in scene units): a surface seen at a grazing angle does not hide itself.
HIDDEN_TOLERANCE, HIDDEN_MARGIN = 0.01, 1e-3


@dataclass(frozen=True)
class FrameView:
    """A frame's triangles, (T, 3, 3) world corners, seen by its camera (fusion.Camera) whose near
    clipping distance is `near`."""

    corners: np.ndarray
    camera: object
    near: float


@dataclass(frozen=True)
class MotionPass:
    motion: np.ndarray  # (H, W, 2) float32: X, Y in pixels; 0 where nothing was hit
    occluded: np.ndarray  # (H, W) bool
    distance: np.ndarray  # (H, W): frame N's nearest surface per pixel (inf: none), for the next frame


def motion_pass(now, before, counterparts, before_distance=None):
    """The motion of frame `now` (FrameView) back to frame `before` (FrameView).

    counterparts: (T,) indices into before.corners of each of now.corners' triangles, −1 where the
    triangle does not exist in frame N−1. Every triangle of `before` hides what is behind it:
    before_distance is its nearest surface per pixel when known already (the `distance` of the
    frame before's own motion pass), else it is rasterised.
    """
    camera = now.camera
    triangle, weights, distance = camera_coverage(now.corners, camera, now.near)
    known = triangle >= 0
    known[known] = counterparts[triangle[known]] >= 0
    points_before = np.einsum("nk,nkc->nc", weights[known], before.corners[counterparts[triangle[known]]])
    view_before = before.camera.to_view(points_before)
    positions, distances = before.camera.to_pixels(view_before)
    rows, columns = np.nonzero(known)
    centres = np.stack([columns + 0.5, rows + 0.5], axis=1)
    motion = np.zeros((camera.height, camera.width, 2), np.float32)
    motion[known] = positions - centres
    if before_distance is None:
        before_distance = _clipped_coverage(before.corners, before.camera, before.near)[0].depth
    occluded = np.ones((camera.height, camera.width), bool)
    occluded[known] = ~_seen(positions, distances, before, before_distance)
    return MotionPass(motion, occluded, distance)


def _seen(positions, distances, before, nearest):
    """Which points (frame N−1's pixel positions and distances) that frame's camera saw, its
    nearest surface per pixel being `nearest`."""
    camera = before.camera
    inside = ((positions >= 0) & (positions <= [camera.width, camera.height])).all(axis=1) & (distances > before.near)
    nearest_around = _least_around(nearest, positions[inside] - 0.5)
    seen = np.zeros(len(positions), bool)
    seen[inside] = distances[inside] <= nearest_around * (1 + HIDDEN_TOLERANCE) + HIDDEN_MARGIN
    return seen


def _least_around(values, points):
    """The least of the 2 × 2 values around each point (x, y in pixel-index units), the grid's
    edge repeated beyond it."""
    height, width = values.shape
    left = np.clip(np.floor(points[:, 0]).astype(np.int64), -1, width - 1)
    top = np.clip(np.floor(points[:, 1]).astype(np.int64), -1, height - 1)
    columns = np.clip(np.stack([left, left + 1]), 0, width - 1)
    rows = np.clip(np.stack([top, top + 1]), 0, height - 1)
    return np.minimum.reduce([values[rows[i], columns[j]] for i in (0, 1) for j in (0, 1)])


def camera_coverage(corners, camera, near):
    """Rasterise world triangles in a camera, clipped at its near plane: per pixel the triangle
    (−1 where none), the barycentric weights of the pixel centre's point on it (perspective-
    correct, relative to the whole triangle's corners) and the distance (inf where none)."""
    coverage, source, corner_weights = _clipped_coverage(corners, camera, near)
    covered = coverage.covered
    pieces = coverage.triangle[covered]
    triangle = np.full(covered.shape, -1, np.int64)
    triangle[covered] = source[pieces]
    piece_weights = coverage.barycentric[covered].astype(np.float64)
    cut = ~np.all(corner_weights == np.eye(3), axis=(1, 2))[pieces]  # a clipped piece's corners are not its triangle's
    piece_weights[cut] = np.einsum("nk,nkc->nc", piece_weights[cut], corner_weights[pieces[cut]])
    weights = np.zeros(covered.shape + (3,), np.float64)
    weights[covered] = piece_weights
    return triangle, weights, coverage.depth


def _clipped_coverage(corners, camera, near):
    """The raster.Coverage of the triangles' pieces in front of the near plane, the triangle each
    piece comes from and its corners' weights (clip_near)."""
    view = camera.to_view(corners.reshape(-1, 3)).reshape(-1, 3, 3)
    pieces, source, corner_weights = clip_near(view, near)
    pixels, depth = camera.to_pixels(pieces.reshape(-1, 3))
    coverage = rasterize(pixels.reshape(-1, 3, 2), camera.width, camera.height, depth=depth.reshape(-1, 3))
    return coverage, source, corner_weights


def clip_near(view_corners, near):
    """Clip camera-space triangles (T, 3, 3), the camera looking down −Z, to the part farther than
    `near`: (pieces (P, 3, 3), the triangle each piece comes from (P,), each piece corner's
    barycentric weights relative to that triangle's corners (P, 3, 3))."""
    ahead = -view_corners[:, :, 2] - near  # > 0: in front of the near plane
    in_front = ahead > 0
    count = in_front.sum(axis=1)
    identity = np.broadcast_to(np.eye(3), view_corners.shape)
    whole = np.flatnonzero(count == 3)
    pieces, sources, weights = [view_corners[whole]], [whole], [identity[whole]]
    for kept in (1, 2):
        triangles = np.flatnonzero(count == kept)
        # Roll each triangle's corners so that the odd one out (kept alone, or cut alone) is first.
        odd = np.argmax(in_front[triangles] if kept == 1 else ~in_front[triangles], axis=1)
        order = (odd[:, None] + np.arange(3)) % 3
        corner_weights = np.take_along_axis(identity[triangles], order[:, :, None], axis=1)
        distances = np.take_along_axis(ahead[triangles], order, axis=1)
        cut_b = _cut(corner_weights, distances, 0, 1)
        cut_c = _cut(corner_weights, distances, 0, 2)
        if kept == 1:  # a: kept, b and c cut away: one smaller triangle
            new = [np.stack([corner_weights[:, 0], cut_b, cut_c], axis=1)]
        else:  # a cut away, b and c kept: a quad, two triangles
            new = [np.stack([cut_b, corner_weights[:, 1], corner_weights[:, 2]], axis=1),
                   np.stack([cut_b, corner_weights[:, 2], cut_c], axis=1)]
        for piece_weights in new:
            pieces.append(np.einsum("pkj,pjc->pkc", piece_weights, view_corners[triangles]))
            sources.append(triangles)
            weights.append(piece_weights)
    return np.concatenate(pieces), np.concatenate(sources), np.concatenate(weights)


def _cut(corner_weights, distances, a, b):
    """The weights of the point where the edge a → b crosses the near plane."""
    t = distances[:, a] / (distances[:, a] - distances[:, b])
    return corner_weights[:, a] + t[:, None] * (corner_weights[:, b] - corner_weights[:, a])
