"""Depth pass → ControlNet depth image (MiDaS convention: relative inverse depth).

Near is white, far is dark, background (nothing hit) is black. Every surface that was hit
stays at least HIT_FLOOR bright, so the farthest object keeps its silhouette against the
black background.
"""
import numpy as np

BACKGROUND_DISTANCE = 1.0e9  # Blender writes 1e10 where a camera ray hits nothing
HIT_FLOOR = 0.1


def hit_mask(distance):
    """True where a surface was hit."""
    return np.isfinite(distance) & (distance > 0.0) & (distance < BACKGROUND_DISTANCE)


def auto_range(distance):
    """(near, far) of the surfaces seen in this frame, or None when nothing was hit."""
    hits = distance[hit_mask(distance)]
    if hits.size == 0:
        return None
    return float(hits.min()), float(hits.max())


def inverse_depth_image(distance, near=None, far=None):
    """Map camera distances (H, W, float) to an 8-bit inverse-depth image (H, W, uint8).

    With near/far left out the range is this frame's nearest and farthest hit; a fixed range
    keeps the brightness of a surface stable across an animation. Distances outside the
    range are clamped to it.
    """
    distance = np.asarray(distance, dtype=np.float64)
    hits = hit_mask(distance)
    image = np.zeros(distance.shape, dtype=np.uint8)
    if not hits.any():
        return image
    if near is None or far is None:
        near, far = auto_range(distance)
    if near <= 0.0 or far < near:
        raise ValueError(f"depth range must satisfy 0 < near <= far, got near={near}, far={far}")
    inverse = 1.0 / np.clip(distance[hits], near, far)
    inverse_near, inverse_far = 1.0 / near, 1.0 / far
    span = inverse_near - inverse_far
    relative = (inverse - inverse_far) / span if span > 0.0 else np.ones_like(inverse)
    brightness = HIT_FLOOR + (1.0 - HIT_FLOOR) * relative
    image[hits] = np.round(brightness * 255.0).astype(np.uint8)
    return image


def merge_ranges(ranges):
    """One (near, far) covering every frame's range; None entries (nothing hit) are skipped."""
    seen = [value for value in ranges if value is not None]
    if not seen:
        return None
    return min(near for near, _ in seen), max(far for _, far in seen)
