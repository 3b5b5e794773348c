"""Line art from exact geometry buffers: white lines on black, like the lineart/canny annotators.

Every pixel gets an edge strength in [0, 1] from its 4 neighbours:
- 1 at silhouettes (surface next to background) and object boundaries;
- the angle between neighbouring normals, FULL_STRENGTH_ANGLE degrees giving 1 (creases);
- the jump in depth beyond what the surface's own slope predicts, relative to the distance,
  FULL_STRENGTH_DEPTH_JUMP giving 1 (a surface occluding another part of the same object).
  It is measured on inverse depth, which is linear across the image for any plane, so a floor
  seen at a grazing angle makes no lines.

A line is drawn where the strength reaches the threshold: with the default 0.5 that is a
crease of 45 degrees (about Freestyle's default crease) or a 5 % depth jump. Lines are 2 px
wide (both sides of the discontinuity); thin lines keep only the nearer side, 1 px, like the
output of a Canny edge detector.
"""
import numpy as np

from .depth import hit_mask

DEFAULT_THRESHOLD = 0.5
FULL_STRENGTH_ANGLE = 90.0  # degrees
FULL_STRENGTH_DEPTH_JUMP = 0.1


def _window(axis, start, stop):
    """Index of the pixels from start to stop (None: to the end) along axis of an (H, W, ...) array."""
    window = [slice(None), slice(None)]
    window[axis] = slice(start, stop)
    return tuple(window)


def _pair_strength(first, second, normals, labels, hits):
    """Strength of the discontinuity between each pixel and its next neighbour."""
    both_hit = hits[first] & hits[second]
    boundary = (hits[first] != hits[second]) | (both_hit & (labels[first] != labels[second]))
    cosine = np.clip(np.einsum("...i,...i->...", normals[first], normals[second]), -1.0, 1.0)
    crease = np.degrees(np.arccos(cosine)) / FULL_STRENGTH_ANGLE
    return np.where(boundary, 1.0, np.where(both_hit, crease, 0.0))


def _depth_jump_strength(inverse_depth, labels, hits, axis):
    """Per pixel, the second difference of inverse depth relative to its own value, signed:
    negative on the nearer side of a jump. Zero where the three pixels are not one surface."""
    previous, centre, following = _window(axis, 0, -2), _window(axis, 1, -1), _window(axis, 2, None)
    same_surface = hits[previous] & hits[centre] & hits[following]
    same_surface &= (labels[previous] == labels[centre]) & (labels[following] == labels[centre])
    second_difference = inverse_depth[previous] - 2.0 * inverse_depth[centre] + inverse_depth[following]
    relative = np.divide(second_difference, inverse_depth[centre], out=np.zeros_like(second_difference),
                         where=same_surface)
    jump = np.zeros_like(inverse_depth)
    jump[centre] = relative / FULL_STRENGTH_DEPTH_JUMP
    return jump


def edge_strength(distance, normals, labels, thin=False):
    """(H, W) float strength in [0, 1] from camera distances (H, W), unit normals (H, W, 3) in
    any one space and integer object labels (H, W). thin: 1 px lines on the nearer side."""
    distance = np.asarray(distance, dtype=np.float32)
    normals, labels = np.asarray(normals, dtype=np.float32), np.asarray(labels)
    hits = hit_mask(distance)
    inverse_depth = np.where(hits, 1.0 / np.where(hits, distance, 1.0), 0.0).astype(np.float32)
    strength = np.zeros(distance.shape, np.float32)
    for axis in (0, 1):
        first, second = _window(axis, 0, -1), _window(axis, 1, None)
        pair = _pair_strength(first, second, normals, labels, hits)
        first_is_nearer = distance[first] <= distance[second]  # thin lines mark only the nearer pixel
        np.maximum(strength[first], np.where(first_is_nearer | (not thin), pair, 0.0), out=strength[first])
        np.maximum(strength[second], np.where(~first_is_nearer | (not thin), pair, 0.0), out=strength[second])
        jump = _depth_jump_strength(inverse_depth, labels, hits, axis)
        np.maximum(strength, -jump if thin else np.abs(jump), out=strength)
    return np.clip(strength, 0.0, 1.0)


def line_image(strength, threshold=DEFAULT_THRESHOLD):
    """White (255) where the edge strength reaches threshold (0 < threshold <= 1), black elsewhere."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"line threshold must be in (0, 1], got {threshold}")
    return np.where(np.asarray(strength) >= threshold, 255, 0).astype(np.uint8)
