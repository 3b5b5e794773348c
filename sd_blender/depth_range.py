"""Which distances the depth pass maps to white and black: per frame, fixed, or over a shot."""
from .core.depth import auto_range, merge_ranges
from .passes import PassError, render_pass_buffers

# The shot range is measured on smaller renders: the extremes move by at most a few pixels'
# worth of depth, and distances outside the range are clamped, never wrapped.
SHOT_MEASURE_SCALE = 4


def shot_frames(scene):
    return f"{scene.frame_start}-{scene.frame_end}"


def measure_shot_range(scene, width, height):
    """(near, far) over every frame of the scene's frame range, stored in the scene settings.
    The current frame is restored afterwards."""
    size = (max(width // SHOT_MEASURE_SCALE, 8), max(height // SHOT_MEASURE_SCALE, 8))
    current = scene.frame_current
    ranges = []
    try:
        for frame in range(scene.frame_start, scene.frame_end + 1):
            scene.frame_set(frame)
            ranges.append(auto_range(render_pass_buffers(scene, ["depth"], *size)["depth"]))
    finally:
        scene.frame_set(current)
    shot = merge_ranges(ranges)
    if shot is None:
        raise PassError(f"the camera sees no surface in frames {shot_frames(scene)}: nothing to measure a depth range on")
    settings = scene.sd_blender
    settings.depth_shot_near, settings.depth_shot_far = shot
    settings.depth_shot_frames = shot_frames(scene)
    return shot


def depth_range(scene, width, height):
    """(near, far) for the depth pass, or None for this frame's own range."""
    settings = scene.sd_blender
    if settings.depth_range_mode == "FIXED":
        if settings.depth_near >= settings.depth_far:
            raise PassError(f"depth range: Near ({settings.depth_near:g}) must be less than Far ({settings.depth_far:g})")
        return settings.depth_near, settings.depth_far
    if settings.depth_range_mode == "SHOT":
        if settings.depth_shot_frames != shot_frames(scene):
            return measure_shot_range(scene, width, height)
        return settings.depth_shot_near, settings.depth_shot_far
    return None
