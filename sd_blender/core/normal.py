"""Normals → ControlNet normal image (normalbae convention).

Camera-space normals encoded as (n + 1) / 2 with red = left (−X of Blender's camera space),
green = up (+Y) and blue = toward the viewer (+Z). Background (nothing hit) is (128, 128, 255),
the colour of a surface facing the camera.
"""
import numpy as np

BACKGROUND = (128, 128, 255)
_LEFT_UP_TOWARD_VIEWER = np.array([-1.0, 1.0, 1.0], dtype=np.float32)


def normals_from_angles(polar, azimuth):
    """Unit vectors (..., 3) from their polar angle (from +Z) and azimuth (from +X toward +Y)."""
    sin_polar = np.sin(polar)
    return np.stack([sin_polar * np.cos(azimuth), sin_polar * np.sin(azimuth), np.cos(polar)], axis=-1)


def camera_space_normals(world_normals, camera_rotation):
    """World-space normals (..., 3) in the camera's frame, given the camera's world rotation (3, 3).

    The rotation's columns are the camera's axes in world space, so the camera-space
    components are the dot products with those columns.
    """
    world_normals = np.asarray(world_normals)
    return world_normals @ np.asarray(camera_rotation, dtype=world_normals.dtype)


def normal_image(camera_normals):
    """(H, W, 3) camera-space normals → (H, W, 3) uint8; zero vectors are background."""
    camera_normals = np.asarray(camera_normals, dtype=np.float32)
    hits = np.einsum("...i,...i->...", camera_normals, camera_normals) > 0.25
    encoded = (camera_normals * _LEFT_UP_TOWARD_VIEWER + 1.0) * 127.5
    image = np.round(np.clip(encoded, 0.0, 255.0)).astype(np.uint8)
    image[~hits] = BACKGROUND
    return image
