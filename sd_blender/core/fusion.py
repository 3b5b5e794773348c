"""Views of an object fused into one UV texture, and the texture rendered back into a view: the
maths of whole-object texturing (docs/texturing.md), numpy only.

A texture is size × size texels, row 0 at the top: texel (x, y) holds UV ((x + 0.5) / size,
1 − (y + 0.5) / size), Blender's UV convention (v up). A view's pixels run the same way, row 0
at the top, pixel centres at +0.5. Every texel on the surface knows its world position, normal
and the world area it stands for (TexelSurface); projecting it into a view (Camera) gives where it
is seen, whether it is visible there (the depth test against the distance the view's render
saw) and how squarely (the cosine between its normal and the ray to the camera).
"""
from dataclasses import dataclass

import numpy as np

from .raster import overlap_count, rasterize

# A texel farther from the camera than the view's depth map by more than this (relative, plus an
# absolute margin) is hidden in that view.
DEPTH_TOLERANCE, DEPTH_MARGIN = 0.02, 1e-3
# Views fade out over this fraction of their shorter side next to the frame border.
FEATHER_FRACTION = 0.05
# A UV layout whose islands overlap on more than this fraction of its texels is not baked into.
OVERLAP_TOLERANCE = 1e-3
NOTHING_HIT = 1.0e10  # a render's distance where nothing was hit
# Per-texel work goes a slice at a time: arrays that stay in the processor's cache are several
# times faster than ones of millions of texels.
_TEXELS_AT_ONCE = 1 << 16


@dataclass
class Camera:
    """A view: Blender's world-to-camera matrix (the camera's inverse world matrix), its
    projection matrix (Object.calc_matrix_camera) and the frame's size in pixels."""

    world_to_view: np.ndarray  # (4, 4)
    projection: np.ndarray  # (4, 4)
    width: int
    height: int

    @property
    def orthographic(self):
        return self.projection[3, 3] == 1.0

    def to_view(self, points):
        """World points (N, 3) → camera space (N, 3): the camera looks down −Z."""
        matrix = self.world_to_view.astype(points.dtype)
        return points @ matrix[:3, :3].T + matrix[:3, 3]

    def to_pixels(self, view_points):
        """Camera-space points → (N, 2) pixel coordinates (x right, y down) and (N,) distances
        along the view axis (positive in front of the camera)."""
        projection = self.projection.astype(view_points.dtype)
        clip = view_points @ projection[[0, 1, 3], :3].T + projection[[0, 1, 3], 3]
        w = np.where(np.abs(clip[:, 2]) < 1e-12, 1e-12, clip[:, 2])
        half_frame = np.array([0.5 * self.width, -0.5 * self.height], view_points.dtype)
        pixels = clip[:, :2] / w[:, None] * half_frame + np.abs(half_frame)
        return pixels, -view_points[:, 2]

    def facing(self, points, normals):
        """(N,) bool: which world points' normals face the camera."""
        camera_to_world = np.linalg.inv(self.world_to_view)
        if self.orthographic:
            return normals @ camera_to_world[:3, 2].astype(normals.dtype) > 0
        eye = camera_to_world[:3, 3].astype(points.dtype)
        return normals @ eye - np.einsum("nc,nc->n", normals, points) > 0

    def cosines(self, view_points, world_normals):
        """Cosine between each normal and the direction from its point to the camera."""
        normals = world_normals @ self.world_to_view[:3, :3].T.astype(world_normals.dtype)
        lengths = np.sqrt(np.einsum("nc,nc->n", normals, normals))
        if self.orthographic:
            return normals[:, 2] / np.maximum(lengths, 1e-12)
        distances = np.sqrt(np.einsum("nc,nc->n", view_points, view_points))
        return -np.einsum("nc,nc->n", normals, view_points) / np.maximum(lengths * distances, 1e-12)


@dataclass
class Mesh:
    """The triangles to texture, three corners each: UVs (T, 3, 2), world positions (T, 3, 3) and
    world normals (T, 3, 3) (the evaluated mesh's corner normals: smooth, flat or custom)."""

    uvs: np.ndarray
    positions: np.ndarray
    normals: np.ndarray

    def uv_pixels(self, size):
        return np.stack([self.uvs[..., 0] * size, (1.0 - self.uvs[..., 1]) * size], axis=-1)


@dataclass
class TexelSurface:
    """The texels a mesh's UV layout covers (flat indices into size × size) and, for each, its
    world position, unit normal and the surface area it stands for."""

    size: int
    texels: np.ndarray  # (N,) int
    positions: np.ndarray  # (N, 3)
    normals: np.ndarray  # (N, 3)
    areas: np.ndarray  # (N,)

    def image(self, values, fill=0.0):
        """Per-texel values (N, ...) → a size × size (× ...) image, `fill` outside the layout."""
        out = np.full((self.size * self.size,) + values.shape[1:], fill, np.float32)
        out[self.texels] = values
        return out.reshape((self.size, self.size) + values.shape[1:])


def fusion_size(texture_size, view_side=None):
    """The side of the texel grid views `view_side` pixels across are fused in: the texture's, or
    twice the views' side when that is smaller (finer texels hold no more of what the views show;
    the texture is sized up from it, sized_up)."""
    if view_side is None:
        return texture_size
    return min(texture_size, 2 * view_side)


def sized_up(image, size):
    """A filled texture (no texel left empty, see fill_unseen) bilinearly resampled to
    size × size, one axis at a time."""
    if image.shape[0] == size:
        return image
    return _resampled_rows(_resampled_rows(image, size).transpose(1, 0, 2), size).transpose(1, 0, 2)


def _resampled_rows(image, count):
    """`image` with `count` rows, each interpolated linearly between the two nearest (pixel centres)."""
    centres = np.clip((np.arange(count) + 0.5) * (image.shape[0] / count) - 0.5, 0, image.shape[0] - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, image.shape[0] - 1)
    weight = (centres - low).astype(np.float32)[:, None, None]
    return image[low] * (1 - weight) + image[high] * weight


def texel_surface(mesh, size):
    coverage = rasterize(mesh.uv_pixels(size), size, size)
    covered = coverage.covered.ravel()
    texels = np.flatnonzero(covered)
    triangles = coverage.triangle.ravel()[texels]
    weights = coverage.barycentric.reshape(-1, 3)[texels]
    positions = _barycentric_mix(weights, mesh.positions, triangles)
    normals = _barycentric_mix(weights, mesh.normals, triangles)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    texel_counts = np.bincount(triangles, minlength=len(mesh.uvs))
    areas = _triangle_areas(mesh.positions)[triangles] / texel_counts[triangles]
    return TexelSurface(size, texels, positions.astype(np.float32), normals.astype(np.float32), areas.astype(np.float32))


def _barycentric_mix(weights, corner_values, triangles):
    """Σ_k weights[:, k] × corner_values[triangles, k]: values inside triangles, (N, C) float32."""
    mixed = np.zeros((len(triangles), corner_values.shape[2]), np.float32)
    values = corner_values.astype(np.float32)
    for start in range(0, len(triangles), _TEXELS_AT_ONCE):
        part = slice(start, start + _TEXELS_AT_ONCE)
        for corner in range(3):
            mixed[part] += weights[part, corner, None] * values[triangles[part], corner]
    return mixed


def _triangle_areas(corners):
    return 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)


def usable_for_baking(mesh, size=512):
    """None when the UV layout can take a bake (inside the unit square, islands apart), else
    what is wrong with it."""
    if len(mesh.uvs) == 0:
        return "it has no faces"
    if mesh.uvs.min() < -1e-4 or mesh.uvs.max() > 1.0 + 1e-4:
        return "its UVs reach outside the 0–1 square"
    count = overlap_count(mesh.uv_pixels(size), size, size)
    covered = np.count_nonzero(count)
    if covered == 0:
        return "its UV islands have no area"
    if np.count_nonzero(count > 1) > OVERLAP_TOLERANCE * covered:
        return "its UV islands overlap"
    return None


# -------------------------------------------------------------------- texels seen from a view


@dataclass
class ViewSamples:
    """The texels of a surface one view sees, and how well it sees them. Only the texels seen are
    kept (`texels`: indices into the surface's texels, out of `size`). A texel's colour is read
    from the (up to) four pixels around it that show the same surface, with bilinear weights
    renormalised over those: an occluder's or the background's pixels next to an outline never
    bleed into it."""

    size: int
    texels: np.ndarray  # (M,) in the frame, facing the camera, some pixel around shows it
    cosines: np.ndarray  # (M,)
    feather: np.ndarray  # (M,) 1 inside the frame, falling to 0 at its border
    neighbours: np.ndarray  # (M, 4) flat pixel indices
    neighbour_weights: np.ndarray  # (M, 4) summing to 1

    def weights(self, exponent, discard_angle):
        """(M,): how much this view counts for each texel it sees (view_weights)."""
        return view_weights(True, self.cosines, self.feather, exponent, discard_angle)

    def colours(self, image, which=slice(None)):
        """(M, C): the seen texels' colours in `image` (H, W, C), or those of `which` (a mask or
        indices into the seen texels)."""
        flat = image.reshape(-1, image.shape[2]).astype(np.float32)
        neighbours, weights = self.neighbours[which], self.neighbour_weights[which]
        colours = np.zeros((len(neighbours), flat.shape[1]), np.float32)
        for start in range(0, len(neighbours), _TEXELS_AT_ONCE):
            part = slice(start, start + _TEXELS_AT_ONCE)
            for corner in range(4):
                colours[part] += weights[part, corner, None] * flat[neighbours[part, corner]]
        return colours


def view_weights(visible, cosines, feather, exponent, discard_angle):
    """How much a view counts where it sees the surface: visible × cos^exponent × feather, and
    0 past the discard angle (degrees from square on)."""
    facing = visible & (cosines > np.cos(np.radians(discard_angle)))
    return np.where(facing, np.clip(cosines, 0.0, 1.0) ** exponent * feather, 0.0)


def border_feather(x, y, width, height):
    """1 inside the frame, falling linearly to 0 over FEATHER_FRACTION of the shorter side at its border."""
    border = np.minimum.reduce([x, width - x, y, height - y])
    return np.clip(border / (FEATHER_FRACTION * min(width, height)), 0.0, 1.0)


def view_samples(surface, camera, distance):
    """The surface's texels seen in a view whose render saw `distance` (H, W: distance along the
    view axis per pixel, top row first, huge where nothing was hit)."""
    candidates = np.flatnonzero(camera.facing(surface.positions, surface.normals))
    pieces = [_seen_texels(surface, camera, distance, candidates[start:start + _TEXELS_AT_ONCE])
              for start in range(0, len(candidates), _TEXELS_AT_ONCE)]
    parts = [np.concatenate(part) for part in zip(*pieces)] if pieces else _nothing_seen()
    return ViewSamples(len(surface.texels), *parts)


def _seen_texels(surface, camera, distance, candidates):
    """(texels, cosines, feather, neighbours, neighbour weights) of those candidates the view sees."""
    view_points = camera.to_view(surface.positions[candidates])
    pixels, depth = camera.to_pixels(view_points)
    inside = (
        (depth > 0) & (pixels[:, 0] >= 0) & (pixels[:, 0] <= camera.width)
        & (pixels[:, 1] >= 0) & (pixels[:, 1] <= camera.height)
    )
    candidates, view_points, pixels, depth = candidates[inside], view_points[inside], pixels[inside], depth[inside]
    cosines = camera.cosines(view_points, surface.normals[candidates])
    neighbours, bilinear = _bilinear_neighbours(pixels, camera.width, camera.height)
    seen = distance.ravel()[neighbours]
    same_surface = np.abs(seen - depth[:, None]) <= depth[:, None] * DEPTH_TOLERANCE + DEPTH_MARGIN
    weights = bilinear * same_surface
    total = weights.sum(axis=1)
    kept = (cosines > 0) & (total > 1e-6)
    feather = border_feather(pixels[kept, 0], pixels[kept, 1], camera.width, camera.height)
    return (candidates[kept], cosines[kept].astype(np.float32), feather.astype(np.float32), neighbours[kept],
            (weights[kept] / total[kept, None]).astype(np.float32))


def _nothing_seen():
    return (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((0, 4), np.int32),
            np.zeros((0, 4), np.float32))


def _bilinear_neighbours(points, width, height):
    """The flat indices of the four pixels around each point (clamped at the edges) and their
    bilinear weights, (N, 4) each."""
    x = np.clip(points[:, 0] - 0.5, 0, width - 1)
    y = np.clip(points[:, 1] - 0.5, 0, height - 1)
    x0, y0 = x.astype(np.int32), y.astype(np.int32)  # floor: x and y are not negative
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    right, down = (x0 < width - 1).astype(np.int32), (y0 < height - 1) * np.int32(width)
    indices = np.empty((len(x), 4), np.int32)
    indices[:, 0] = y0 * width + x0
    indices[:, 1] = indices[:, 0] + right
    indices[:, 2] = indices[:, 0] + down
    indices[:, 3] = indices[:, 2] + right
    weights = np.empty((len(x), 4), np.float32)
    weights[:, 1], weights[:, 3] = fx * (1 - fy), fx * fy
    weights[:, 0], weights[:, 2] = (1 - fy) - weights[:, 1], fy - weights[:, 3]
    return indices, weights


def sample_bilinear(image, points):
    """image (H, W, C) at (N, 2) pixel coordinates (centres at +0.5), clamped at the edges."""
    height, width = image.shape[:2]
    indices, weights = _bilinear_neighbours(points, width, height)
    return np.einsum("nk,nkc->nc", weights, image.reshape(-1, image.shape[2])[indices])


# ----------------------------------------------------------------------------------- fusion


@dataclass
class Fused:
    """The weighted mean colour of each texel over the views, and the total weight it got."""

    colours: np.ndarray  # (N, C)
    weight: np.ndarray  # (N,)

    @property
    def seen(self):
        return self.weight > 0


def fuse(images, samples, weights):
    """Per texel, the views' colours (images (H, W, C) floats) averaged with the given weights
    (one (M,) array per view, for the texels it sees: ViewSamples.weights)."""
    total = np.zeros(samples[0].size, np.float32)
    colours = np.zeros((samples[0].size, images[0].shape[2]), np.float32)
    for image, view, weight in zip(images, samples, weights):
        used = np.flatnonzero(weight > 0)
        texels = view.texels[used]
        colours[texels] += weight[used, None] * view.colours(image, used)
        total[texels] += weight[used]
    seen = total > 0
    colours[seen] /= total[seen, None]
    return Fused(colours, total)


def coverage(surface, seen):
    """The fraction of the surface's area its seen texels stand for."""
    total = float(surface.areas.sum())
    return float(surface.areas[seen].sum()) / total if total > 0 else 0.0


def fill_unseen(image, known, dilation=0):
    """Every texel not `known` filled from the known ones around it: first `dilation` rings of
    texels outward, each the mean of its known neighbours (what bilinear filtering and the first
    mipmaps read next to an island), then all the rest by push-pull (averaged down a pyramid,
    pulled back up), so no texel stays black and texels no view saw take their neighbours' colour."""
    image, known = _dilate(image, known, dilation)
    return _push_pull(image, known)


def _dilate(image, known, rings):
    """(image, known) with `rings` rings of unknown texels around the known ones filled."""
    height, width = known.shape
    flat, known = image.reshape(height * width, -1).astype(np.float32), known.ravel().copy()
    frontier = np.flatnonzero(~known)
    frontier = frontier[_touches_known(frontier, known, height, width)]
    for _ in range(rings):
        if not len(frontier):
            break
        neighbours, valid = _neighbours(frontier, height, width)
        from_known = valid & known[neighbours]
        flat[frontier] = (flat[neighbours] * from_known[..., None]).sum(axis=1) / from_known.sum(axis=1)[:, None]
        known[frontier] = True
        next_ring = np.unique(neighbours[valid & ~known[neighbours]])
        frontier = next_ring
    return flat.reshape(image.shape), known.reshape(height, width)


def _touches_known(indices, known, height, width):
    neighbours, valid = _neighbours(indices, height, width)
    return (valid & known[neighbours]).any(axis=1)


def _neighbours(indices, height, width):
    """The 8 neighbours' flat indices of each texel (clamped inside), and which exist."""
    y, x = np.divmod(indices, width)
    neighbours, valid = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                ny, nx = y + dy, x + dx
                valid.append((ny >= 0) & (ny < height) & (nx >= 0) & (nx < width))
                neighbours.append(np.clip(ny, 0, height - 1) * width + np.clip(nx, 0, width - 1))
    return np.stack(neighbours, axis=1), np.stack(valid, axis=1)


def _push_pull(image, known):
    if known.all() or not known.any():
        return image.copy()
    image, known = image.astype(np.float32), known.astype(np.float32)
    coarser = _half(image * known[..., None]), _half(known)
    weight = coarser[1]
    coarse_image = np.where(weight[..., None] > 0, coarser[0] / np.maximum(weight, 1e-12)[..., None], 0.0)
    coarse_filled = _push_pull(coarse_image, weight > 0)
    upsampled = np.repeat(np.repeat(coarse_filled, 2, axis=0), 2, axis=1)[: image.shape[0], : image.shape[1]]
    return np.where(known[..., None] > 0, image, upsampled)


def _half(values):
    """Sum over 2 × 2 blocks (an odd last row or column is padded with zeros)."""
    height, width = values.shape[:2]
    padded = np.pad(values, [(0, height % 2), (0, width % 2)] + [(0, 0)] * (values.ndim - 2))
    return padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]


# --------------------------------------------------------------------- the texture in a view


@dataclass
class ViewMap:
    """Per pixel of a view: the UV of the surface seen there, the cosine, and whether it is the
    textured mesh, seen (not hidden by anything else in the scene)."""

    uvs: np.ndarray  # (H, W, 2)
    cosines: np.ndarray  # (H, W)
    visible: np.ndarray  # (H, W) bool

    def weights(self, exponent, discard_angle):
        """Per pixel, as view_weights: how much this view's image counts there."""
        height, width = self.visible.shape
        y, x = np.mgrid[0:height, 0:width] + 0.5
        return view_weights(self.visible, self.cosines, border_feather(x, y, width, height), exponent, discard_angle)

    def texel_points(self, size):
        """Where each pixel's surface lies in a size × size texture, in texel coordinates."""
        return np.stack([self.uvs[..., 0] * size, (1.0 - self.uvs[..., 1]) * size], axis=-1).reshape(-1, 2)

    def correspondence(self):
        """(H, W, 3) float32: u, v and the cosine where visible, zeros elsewhere (the server's
        synchronized texture job takes this, per view, at latent size)."""
        cosines = np.where(self.visible, np.clip(self.cosines, 0.0, 1.0), 0.0)
        uvs = np.where(self.visible[..., None], np.clip(self.uvs, 0.0, 1.0), 0.0)
        return np.concatenate([uvs, cosines[..., None]], axis=2).astype(np.float32)


def view_map(mesh, camera, distance):
    """Rasterise the mesh in the view (nearest surface wins) and keep the pixels where the
    view's render (`distance`, as for view_samples) saw that same surface."""
    coverage, view_points = _rasterize_in_view(mesh, camera)
    uvs = coverage.interpolate(mesh.uvs)
    normals = coverage.interpolate(mesh.normals).reshape(-1, 3)
    points = coverage.interpolate(view_points).reshape(-1, 3)
    cosines = camera.cosines(points, normals).reshape(camera.height, camera.width)
    same_surface = np.abs(coverage.depth - distance) <= distance * DEPTH_TOLERANCE + DEPTH_MARGIN
    visible = coverage.covered & same_surface & (cosines > 0)
    return ViewMap(uvs, cosines, visible)


def distance_alone(mesh, camera):
    """What the camera sees of the mesh alone, as a render's distances (huge where nothing)."""
    coverage, _ = _rasterize_in_view(mesh, camera)
    return np.where(coverage.covered, coverage.depth, NOTHING_HIT)


def _rasterize_in_view(mesh, camera):
    """The mesh's coverage of the view, and its corners in camera space (T, 3, 3). A triangle
    crossing the camera plane is left out."""
    view_points = camera.to_view(mesh.positions.reshape(-1, 3))
    pixels, depth = camera.to_pixels(view_points)
    depth = depth.reshape(-1, 3)
    in_front = (depth > 1e-6).all(axis=1)
    corners = np.where(in_front[:, None, None], pixels.reshape(-1, 3, 2), np.nan)
    coverage = rasterize(corners, camera.width, camera.height, depth=np.where(in_front[:, None], depth, 1.0))
    return coverage, view_points.reshape(-1, 3, 3)


def perspective(field_of_view, width, height, near, far):
    """The projection matrix Blender gives a camera of this field of view (radians) across the
    frame's longer side."""
    scale = 1.0 / np.tan(field_of_view / 2)
    x_scale, y_scale = (scale, scale * width / height) if width >= height else (scale * height / width, scale)
    return np.array([
        [x_scale, 0, 0, 0],
        [0, y_scale, 0, 0],
        [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, -1, 0],
    ])


def render_into_view(texture, view):
    """The texture (size × size × C) as the view sees it: (H, W, C), zeros where the mesh is not seen."""
    height, width = view.visible.shape
    colours = sample_bilinear(texture, view.texel_points(texture.shape[0])).reshape(height, width, -1)
    return np.where(view.visible[..., None], colours, 0.0)


def view_agreement(image, rendered, weights):
    """Mean absolute difference, 0–255, between a view's image and the texture rendered into it
    (both 0–1 floats), weighted per pixel; None where the view sees nothing."""
    total = float(weights.sum())
    if total <= 0:
        return None
    difference = np.abs(image.astype(np.float64) - rendered).mean(axis=2)
    return float((difference * weights).sum() / total * 255.0)
