"""Warping the previous frame by the scene's motion, and how far consecutive frames disagree.

Motion is an (H, W, 2) array in pixel units, X then Y: pixel (x, y) of frame N (row y, column x,
y downward, pixel centres at integer indices) shows what was at (x + X, y + Y) in frame N−1.
"""
import numpy as np

from .exr import read_exr, write_exr
from .fusion import sample_bilinear


def read_motion(path):
    """The (H, W, 2) motion of a motion EXR (channels X and Y)."""
    channels = read_exr(path)
    missing = {"X", "Y"} - set(channels)
    if missing:
        raise ValueError(f"{path}: a motion EXR needs channels X and Y, it lacks {', '.join(sorted(missing))}")
    return np.stack((channels["X"], channels["Y"]), axis=-1)


def write_motion(path, motion):
    motion = np.asarray(motion, np.float32)
    write_exr(path, {"X": motion[..., 0], "Y": motion[..., 1]})


def _check_shapes(image, motion):
    if motion.ndim != 3 or motion.shape[2] != 2 or image.shape[:2] != motion.shape[:2]:
        raise ValueError(f"motion must be (H, W, 2) for an image of {image.shape[:2]}, got {motion.shape}")


def warp(previous, motion):
    """Sample previous bilinearly at (x + X, y + Y) for every pixel: (warped float32 image of
    previous's shape, inside). inside is False where the sample point is outside the image (or
    the motion is not finite); those pixels take the nearest edge value."""
    previous = np.asarray(previous)
    motion = np.asarray(motion, np.float64)
    _check_shapes(previous, motion)
    height, width = previous.shape[:2]
    rows, columns = np.indices((height, width), dtype=np.float64)
    samples = np.stack([columns + motion[..., 0], rows + motion[..., 1]], axis=-1).reshape(-1, 2)
    inside = ((samples >= 0) & (samples <= [width - 1, height - 1])).all(axis=1).reshape(height, width)
    image = previous.astype(np.float32).reshape(height, width, -1)
    # fusion's pixel coordinates put pixel centres at +0.5; NaN motion samples the first pixel.
    warped = sample_bilinear(image, np.nan_to_num(samples, nan=0.0) + 0.5)
    return warped.reshape(previous.shape).astype(np.float32), inside


def warping_error(current, previous, motion, occluded=None):
    """(mean absolute difference, 0–255 scale, between current and previous warped by motion over
    the pixels neither occluded nor warped from outside the frame, all channels averaged — None
    when no pixel counts; the fraction of pixels compared). Images are uint8, or float in 0–255."""
    current = np.asarray(current, np.float32)
    warped, inside = warp(previous, motion)
    if warped.shape != current.shape:
        raise ValueError(f"the frames differ in shape: {current.shape} and {warped.shape}")
    compared = inside if occluded is None else inside & ~np.asarray(occluded, bool)
    fraction = float(compared.mean())
    if not compared.any():
        return None, fraction
    return float(np.abs(current - warped)[compared].mean()), fraction


def match_colour_statistics(image, reference):
    """image (uint8, (H, W) or (H, W, C)) with each channel's mean and standard deviation moved to
    reference's, uint8."""
    source = np.asarray(image, np.float64)
    target = np.asarray(reference, np.float64)
    axes = (0, 1)
    source_mean, source_std = source.mean(axis=axes), source.std(axis=axes)
    target_mean, target_std = target.mean(axis=axes), target.std(axis=axes)
    # A flat channel has no spread to scale: it only moves to the reference's mean.
    scale = np.divide(target_std, source_std, out=np.ones_like(source_std), where=source_std > 0)
    matched = (source - source_mean) * scale + target_mean
    return np.clip(np.rint(matched), 0, 255).astype(np.uint8)
