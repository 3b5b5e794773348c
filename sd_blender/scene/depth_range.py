"""Which distances the depth pass maps to white and black: per frame, fixed, or over a shot."""
from ..core.depth import auto_range, merge_ranges
from .passes import PassError, render_pass_buffers

# The shot range is measured on smaller renders: the extremes move by at most a few pixels'
# worth of depth, and distances outside the range are clamped, never wrapped.
SHOT_MEASURE_SCALE = 4


def shot_frames(scene):
    return f"{scene.frame_start}-{scene.frame_end}"


def shot_needs_measuring(scene):
    """Whether the Shot depth range is in use and not measured over the scene's frame range."""
    settings = scene.sd_blender
    return settings.depth_range_mode == "SHOT" and settings.depth_shot_frames != shot_frames(scene)


def measure_shot_range(scene, width, height):
    """The explicit step of the Shot depth range: (near, far) over every frame of the scene's
    frame range, stored in the scene settings. The current frame is restored afterwards."""
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


def measured_shot_text(scene):
    """One line saying the Shot range measured last and over which frames."""
    settings = scene.sd_blender
    return (f"depth range {settings.depth_shot_near:.3g} to {settings.depth_shot_far:.3g}, "
            f"measured over frames {settings.depth_shot_frames}")


def measure_shot_if_needed(scene, kinds, width, height):
    """The explicit measuring step before rendering the passes `kinds` at width x height: the Shot
    range is measured when the depth pass needs it and it is not measured yet. Returns what was
    measured, else None."""
    if "depth" not in kinds or not shot_needs_measuring(scene):
        return None
    return measure_shot_range(scene, width, height)


def depth_range(scene):
    """(near, far) for the depth pass, or None for this frame's own range. Reads the settings,
    never measures: a Shot range not measured over the frame range is an error saying what to do."""
    settings = scene.sd_blender
    if settings.depth_range_mode == "FIXED":
        if settings.depth_near >= settings.depth_far:
            raise PassError(f"depth range: Near ({settings.depth_near:g}) must be less than Far ({settings.depth_far:g})")
        return settings.depth_near, settings.depth_far
    if settings.depth_range_mode == "SHOT":
        if shot_needs_measuring(scene):
            raise PassError(f"the Shot depth range is not measured over frames {shot_frames(scene)}: "
                            "press Measure Shot (Passes panel)")
        return settings.depth_shot_near, settings.depth_shot_far
    return None
