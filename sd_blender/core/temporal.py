"""The temporal modes of a frame range (docs/animation.md): which frames go to the server together,
with which anchor frame, and how a frame starts from the one before it.

    off     one job a frame, each from its own noise (the same seed)
    anchor  frames go in chunks (POST /v1/frame-jobs) whose self-attention also reads an anchor
            frame's keys and values: the first frame of the shot, or a keyframe every K frames
    warp    each frame starts from the frame before it, warped by the motion pass: what that frame
            did not show is inpainted first, then the whole frame is repainted at a low strength
    full    warp, with the anchor's attention
"""
import numpy as np

from .fusion import fill_unseen
from .png import png_base64
from .sequential import grown
from .warp import warp

TEMPORAL_MODES = ("off", "anchor", "warp", "full")
DEFAULT_TEMPORAL_MODE = "full"
DEFAULT_WARP_STRENGTH = 0.5
# The hole of a warped frame (what frame N−1 did not show) grows by this much: the pixels along
# its edge were warped from across an outline.
HOLE_GROWTH_PIXELS = 2
# Fields of a POST /v1/jobs body that a frame job carries per frame or does not take.
_PER_FRAME_FIELDS = ("controls", "init_image", "mask_image", "num_images", "tiling")


def uses_anchor(mode):
    return mode in ("anchor", "full")


def uses_warp(mode):
    return mode in ("warp", "full")


def jobs_at_once(mode, limits):
    """How many of a shot's jobs go to the server at once: as many as it runs side by side (its
    limits' parallel_jobs, 1 when it does not say), but one at a time when each frame starts from the
    frame before it."""
    if uses_warp(mode) or not limits:
        return 1
    return limits.get("parallel_jobs") or 1


def anchor_frame(frame, first, every=0):
    """The anchor of `frame`: the first frame of the shot, or with every=K the keyframe (first,
    first + K, ...) at or before it."""
    return first + (frame - first) // every * every if every else first


def warped_frame_anchor(frame, first, every=0):
    """The anchor of a frame that starts from the one before it: a keyframe already generated (the
    keyframe before it, for a keyframe itself); None for the first frame of the shot."""
    return anchor_frame(frame - 1, first, every) if frame > first else None


def chunks(frames, first, every, size):
    """The frames to generate, in order, cut into jobs of at most `size` frames sharing an anchor."""
    jobs = []
    for frame in frames:
        if jobs and len(jobs[-1]) < size and anchor_frame(jobs[-1][0], first, every) == anchor_frame(frame, first, every):
            jobs[-1].append(frame)
        else:
            jobs.append([frame])
    return jobs


def warped_start(previous, motion, occluded):
    """How frame N starts from frame N−1's image ((H, W, 3) uint8): that image warped by frame N's
    motion, and the hole (H, W) bool — what frame N−1 did not show or came from outside it, grown a
    little — filled from the pixels around it so the inpainting starts from plausible colours."""
    warped, inside = warp(previous, motion)
    hole = grown(np.asarray(occluded, bool) | ~inside, HOLE_GROWTH_PIXELS)
    filled = fill_unseen(warped, ~hole) if hole.any() and not hole.all() else warped
    return np.clip(np.round(filled), 0, 255).astype(np.uint8), hole


def inpainting_body(body, image, hole):
    """The job repainting the hole of a warped frame whole (strength 1), the rest kept."""
    return dict(body, init_image=png_base64(image), mask_image=png_base64(np.where(hole, 255, 0).astype(np.uint8)),
                strength=1.0)


def repaint_body(body, image, strength):
    """The job repainting a whole frame lightly from `image`: at least one denoising step runs."""
    return dict(body, init_image=png_base64(image), strength=max(strength, 1.0 / body["steps"]))


def frame_job_body(frame_bodies, anchor_body=None):
    """The body of POST /v1/frame-jobs from the POST /v1/jobs bodies of its frames (one seed and
    one set of settings, each frame its own control images, init_image and mask_image) and of
    the anchor frame (None: no cross-frame attention)."""
    first = frame_bodies[0]
    body = {key: value for key, value in first.items() if key not in _PER_FRAME_FIELDS}
    body["controls"] = [{key: value for key, value in control.items() if key != "image"} for control in first["controls"]]
    body["frames"] = [_frame_inputs(frame_body, "init_image", "mask_image") for frame_body in frame_bodies]
    body["anchor"] = _frame_inputs(anchor_body, "init_image") if anchor_body else None
    return body


def _frame_inputs(body, *image_fields):
    inputs = {"control_images": [control["image"] for control in body["controls"]]}
    inputs.update({field: body[field] for field in image_fields if body.get(field) is not None})
    return inputs
