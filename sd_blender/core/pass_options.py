"""How the float buffers of a frame become control images: the user's choices, nothing from bpy."""
from dataclasses import dataclass

from .lineart import DEFAULT_THRESHOLD


@dataclass(frozen=True)
class PassOptions:
    """depth_range: fixed (near, far) in scene units, or None to use each frame's own range.
    lineart_threshold, canny_threshold: edge strength (0..1] a line needs, see core.lineart.
    openpose_stick_scale: width of the drawn limbs relative to the reference annotator's."""

    depth_range: tuple | None = None
    lineart_threshold: float = DEFAULT_THRESHOLD
    canny_threshold: float = DEFAULT_THRESHOLD
    openpose_stick_scale: float = 1.0
