"""The temporal modes' plan (sd_blender.core.temporal): anchors, chunks, the frame job's body and
how a frame starts from the one before it."""
import base64
import io

import numpy as np
from PIL import Image

from sd_blender.core import temporal


def test_the_anchor_is_the_first_frame_or_the_keyframe_at_or_before():
    assert [temporal.anchor_frame(frame, 1) for frame in (1, 2, 30)] == [1, 1, 1]
    assert [temporal.anchor_frame(frame, 1, every=4) for frame in (1, 4, 5, 8, 9)] == [1, 1, 5, 5, 9]
    # A frame that starts from the one before is anchored to a keyframe already generated.
    assert [temporal.warped_frame_anchor(frame, 1, every=4) for frame in (1, 2, 5, 6)] == [None, 1, 1, 5]


def test_chunks_hold_at_most_the_servers_frames_and_one_anchor_each():
    assert temporal.chunks([1, 2, 3, 4, 5], first=1, every=0, size=2) == [[1, 2], [3, 4], [5]]
    assert temporal.chunks([1, 2, 3, 4, 5], first=1, every=3, size=8) == [[1, 2, 3], [4, 5]]
    assert temporal.chunks([2, 5, 6], first=1, every=0, size=8) == [[2, 5, 6]]  # frames kept from before: skipped


def job_body(frame, init=None, mask=None):
    body = {"prompt": "p", "seed": 7, "steps": 10, "num_images": 1,
            "controls": [{"type": "depth", "image": f"depth{frame}", "weight": 0.8, "start": 0.0, "end": 1.0}]}
    if init:
        body.update(init_image=init, strength=0.5)
    if mask:
        body["mask_image"] = mask
    return body


def test_a_frame_job_carries_each_frames_images_and_the_anchors():
    body = temporal.frame_job_body([job_body(2, "init2", "mask2"), job_body(3, "init3")], job_body(1, "anchor"))
    assert body["controls"] == [{"type": "depth", "weight": 0.8, "start": 0.0, "end": 1.0}]
    assert body["frames"] == [{"control_images": ["depth2"], "init_image": "init2", "mask_image": "mask2"},
                              {"control_images": ["depth3"], "init_image": "init3"}]
    assert body["anchor"] == {"control_images": ["depth1"], "init_image": "anchor"}
    assert (body["seed"], body["strength"]) == (7, 0.5) and "num_images" not in body and "init_image" not in body
    assert temporal.frame_job_body([job_body(2)])["anchor"] is None


def decoded(field):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(field))))


def test_a_warped_frame_keeps_what_was_seen_and_fills_the_hole_from_around_it():
    previous = np.zeros((32, 48, 3), np.uint8)
    previous[:, :, 0] = np.arange(48) * 5  # a ramp left to right
    motion = np.zeros((32, 48, 2), np.float32)
    motion[..., 0] = -2.0  # everything moved 2 px right: pixel x shows what was at x − 2
    occluded = np.zeros((32, 48), bool)
    occluded[10:14, 20:24] = True
    image, hole = temporal.warped_start(previous, motion, occluded)
    assert hole[10:14, 20:24].all() and hole[:, :2].all()  # hidden, and from outside the frame
    assert hole[8:16, 18:26].all() and not hole[5, 30]  # grown by 2 px
    assert (image[~hole][:, 0] == (np.indices((32, 48))[1][~hole] - 2) * 5).all()
    assert 60 <= image[12, 22, 0] <= 130  # filled from around it: the ramp runs 75 to 120 across the hole

    inpaint = temporal.inpainting_body(job_body(2), image, hole)
    assert inpaint["strength"] == 1.0 and (decoded(inpaint["mask_image"]) == np.where(hole, 255, 0)).all()
    assert (decoded(inpaint["init_image"]) == image).all()
    assert temporal.repaint_body(job_body(2), image, 0.05)["strength"] == 0.1  # at least one of 10 steps runs
