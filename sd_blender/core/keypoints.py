"""The OpenPose keypoint sets and one person's keypoints in image pixels.

Order and names follow OpenPose's COCO-18 body model, its 21-point hands and 70-point face.
"Right" and "left" are the subject's own sides.
"""
from dataclasses import dataclass, field
from typing import Optional

BODY_KEYPOINTS = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)

FINGERS = ("thumb", "index", "middle", "ring", "pinky")
# Index 0 is the wrist; then four points per finger, from the palm to the tip.
HAND_KEYPOINTS = ("wrist",) + tuple(f"{finger}_{joint}" for finger in FINGERS for joint in range(1, 5))
FACE_KEYPOINT_COUNT = 70  # 68 iBUG landmarks + the two pupils (68 right, 69 left)

# (x, y) in pixels: x to the right from the left image edge, y down from the top edge, so pixel
# (column i, row j) covers [i, i+1) x [j, j+1). None = missing or outside the frame.
Point = Optional[tuple]


@dataclass
class Person:
    """One armature's keypoints. Hands and face are None when the rig has no bones for them."""

    body: list = field(default_factory=lambda: [None] * len(BODY_KEYPOINTS))
    left_hand: Optional[list] = None
    right_hand: Optional[list] = None
    face: Optional[list] = None
