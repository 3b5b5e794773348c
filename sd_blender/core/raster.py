"""Triangles rasterised into a pixel grid with numpy: which triangle covers each pixel centre and
where inside it (barycentric weights), with a depth buffer for camera views.

Pixel (x, y) has its centre at (x + 0.5, y + 0.5); y runs downward (row 0 first). The work is
vectorised over all candidate (triangle, pixel) pairs of a chunk of triangles, so a mesh of many
small triangles costs a few array operations, not a Python loop per triangle.
"""
from dataclasses import dataclass

import numpy as np

# Candidate (triangle, pixel) pairs examined at once: bounds the memory of one chunk.
_CHUNK_CANDIDATES = 1 << 16
# A triangle whose bounding box holds more pixels than this is rasterised on its own grid.
_LARGE_BOX = 1 << 12
_NOTHING = -1


@dataclass
class Coverage:
    """Per pixel: the covering triangle's index (−1 where none), its barycentric weights
    (perspective-correct when rasterised with depth), and the depth there (inf where none)."""

    triangle: np.ndarray  # (H, W) int32
    barycentric: np.ndarray  # (H, W, 3) float32
    depth: np.ndarray  # (H, W) float32

    @property
    def covered(self):
        return self.triangle != _NOTHING

    def interpolate(self, corner_values):
        """(T, 3, C) values at each triangle's corners → (H, W, C), zero where nothing covers."""
        covered = self.covered
        out = np.zeros(self.triangle.shape + corner_values.shape[2:], np.float32)
        corners = corner_values[self.triangle[covered]]
        out[covered] = np.einsum("nk,nk...->n...", self.barycentric[covered], corners)
        return out


def rasterize(corners, width, height, depth=None):
    """Rasterise triangles given by their corners' pixel coordinates, (T, 3, 2).

    Without `depth` a later triangle overwrites an earlier one (a UV layout: islands should not
    overlap). With `depth` ((T, 3) positive distances from the camera) the nearest surface wins
    and the barycentric weights are perspective-correct: depth is affine in 1/distance.
    """
    triangle = np.full((height, width), _NOTHING, np.int32)
    barycentric = np.zeros((height, width, 3), np.float32)
    nearest = np.full((height, width), np.inf, np.float32)
    for pixels, triangles, weights in _inside_pairs(corners, width, height):
        if depth is None:
            triangle.flat[pixels], barycentric.reshape(-1, 3)[pixels] = triangles, weights
            continue
        distance = (1.0 / np.einsum("nk,nk->n", weights, 1.0 / depth[triangles])).astype(np.float32)
        # The nearest so far per pixel, then the candidates at that distance: ties (an edge two
        # triangles share) are the same surface, either may win.
        np.minimum.at(nearest.reshape(-1), pixels, distance)
        nearest_here = distance == nearest.flat[pixels]
        pixels, triangles = pixels[nearest_here], triangles[nearest_here]
        weights = weights[nearest_here] / depth[triangles] * distance[nearest_here, None]
        triangle.flat[pixels], barycentric.reshape(-1, 3)[pixels] = triangles, weights
    return Coverage(triangle, barycentric, nearest)


def overlap_count(corners, width, height):
    """(H, W) int: how many triangles cover each pixel centre strictly inside (a centre on an
    edge shared by neighbours counts once at most), for finding overlapping UV islands."""
    count = np.zeros(height * width, np.int32)
    for pixels, _, weights in _inside_pairs(corners, width, height, margin=-1e-6):
        np.add.at(count, pixels, 1)
    return count.reshape(height, width)


def _inside_pairs(corners, width, height, margin=1e-6):
    """Yield (flat pixel indices, triangle indices, barycentric weights) of the pixel centres
    inside each triangle (within `margin` of an edge, in barycentric units), chunk by chunk."""
    corners = np.asarray(corners, np.float64)
    planes = _barycentric_planes(corners)
    valid = np.isfinite(planes).all(axis=(1, 2))
    low = np.floor(corners.min(axis=1) - 0.5) + 1  # the first pixel whose centre is inside the box
    high = np.floor(corners.max(axis=1) - 0.5)
    low = np.clip(np.nan_to_num(low), 0, [width, height]).astype(np.int64)
    high = np.clip(np.nan_to_num(high), -1, [width - 1, height - 1]).astype(np.int64)
    spans = np.where(valid[:, None], np.maximum(high - low + 1, 0), 0)
    counts = spans[:, 0] * spans[:, 1]
    small = np.flatnonzero((counts > 0) & (counts <= _LARGE_BOX))
    for chunk in _chunks(small, counts[small]):
        yield _inside_small_boxes(chunk, counts[chunk], low, spans, planes, width, margin)
    for triangle in np.flatnonzero(counts > _LARGE_BOX):
        yield from _inside_large_box(triangle, low[triangle], spans[triangle], planes[triangle], width, margin)


def _chunks(triangles, counts):
    """Pieces of `triangles` whose candidate counts add up to about _CHUNK_CANDIDATES each."""
    ends = np.cumsum(counts)
    start = 0
    while start < len(triangles):
        stop = max(int(np.searchsorted(ends, ends[start] - counts[start] + _CHUNK_CANDIDATES, "right")), start + 1)
        yield triangles[start:stop]
        start = stop


def _inside_small_boxes(triangles, counts, low, spans, planes, width, margin):
    """Every candidate (triangle, pixel) pair of many small boxes at once."""
    candidates = np.repeat(triangles, counts)
    local = np.arange(len(candidates)) - np.repeat(np.cumsum(counts) - counts, counts)
    row, column = np.divmod(local, spans[candidates, 0])
    x, y = low[candidates, 0] + column, low[candidates, 1] + row
    centre_x, centre_y = x + 0.5, y + 0.5
    plane = planes[:, :2].reshape(-1, 6)[candidates]  # corners 0 and 1: a, b, c each
    first = plane[:, 0] * centre_x + plane[:, 1] * centre_y + plane[:, 2]
    second = plane[:, 3] * centre_x + plane[:, 4] * centre_y + plane[:, 5]
    third = 1.0 - first - second  # barycentric weights add up to 1
    inside = (first >= -margin) & (second >= -margin) & (third >= -margin)
    weights = np.stack([first[inside], second[inside], third[inside]], axis=1).astype(np.float32)
    return (y * width + x)[inside], candidates[inside].astype(np.int32), weights


def _inside_large_box(triangle, low, spans, planes, width, margin):
    """One large triangle, a band of rows at a time, evaluated on the band's grid."""
    columns = np.arange(low[0], low[0] + spans[0])
    rows_per_band = max(_CHUNK_CANDIDATES // len(columns), 1)
    for first_row in range(low[1], low[1] + spans[1], rows_per_band):
        rows = np.arange(first_row, min(first_row + rows_per_band, low[1] + spans[1]))
        weights = (planes[:, 0, None, None] * (columns + 0.5)[None, None, :]
                   + planes[:, 1, None, None] * (rows + 0.5)[None, :, None] + planes[:, 2, None, None])
        y, x = np.nonzero((weights >= -margin).all(axis=0))
        inside = weights[:, y, x].T
        yield (rows[y] * width + columns[x]), np.full(len(y), triangle, np.int32), inside.astype(np.float32)


def _barycentric_planes(corners):
    """(T, 3, 3): for each corner k, (a, b, c) with its barycentric weight = a·x + b·y + c;
    NaN for degenerate (zero-area) triangles. In closed form: far quicker than inverting T
    3 × 3 matrices."""
    x, y = corners[:, :, 0], corners[:, :, 1]
    determinant = (y[:, 1] - y[:, 2]) * (x[:, 0] - x[:, 2]) + (x[:, 2] - x[:, 1]) * (y[:, 0] - y[:, 2])
    flat = np.abs(determinant) < 1e-12
    determinant = np.where(flat, np.nan, determinant)
    planes = np.empty(corners.shape[:1] + (3, 3))
    planes[:, 0, 0] = (y[:, 1] - y[:, 2]) / determinant
    planes[:, 0, 1] = (x[:, 2] - x[:, 1]) / determinant
    planes[:, 1, 0] = (y[:, 2] - y[:, 0]) / determinant
    planes[:, 1, 1] = (x[:, 0] - x[:, 2]) / determinant
    planes[:, :2, 2] = -(planes[:, :2, 0] * x[:, 2, None] + planes[:, :2, 1] * y[:, 2, None])
    planes[:, 2] = -planes[:, 0] - planes[:, 1]
    planes[:, 2, 2] += 1.0
    return planes
