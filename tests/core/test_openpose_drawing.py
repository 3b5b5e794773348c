"""The OpenPose control image and JSON, checked against controlnet_aux's own drawing code."""
import math
import random

import numpy as np
import pytest

from reference_openpose import reference_draw_poses, reference_poses
from sd_blender.core.keypoints import BODY_KEYPOINTS, FACE_KEYPOINT_COUNT, HAND_KEYPOINTS, Person
from sd_blender.core.openpose import BODY_COLORS, draw_openpose, openpose_json, sdxl_stick_scale

J = {name: i for i, name in enumerate(BODY_KEYPOINTS)}
BLACK = (0, 0, 0)

# A standing figure facing the camera, in units of its head height, origin at the neck.
# The subject's right is the image's left.
FIGURE = {
    "nose": (0.0, -0.8), "neck": (0.0, 0.0),
    "right_shoulder": (-1.0, 0.0), "right_elbow": (-1.6, 1.5), "right_wrist": (-1.9, 2.9),
    "left_shoulder": (1.0, 0.0), "left_elbow": (1.7, 1.4), "left_wrist": (2.4, 2.6),
    "right_hip": (-0.6, 3.0), "right_knee": (-0.7, 4.8), "right_ankle": (-0.8, 6.5),
    "left_hip": (0.6, 3.0), "left_knee": (0.9, 4.7), "left_ankle": (1.2, 6.4),
    "right_eye": (-0.25, -1.0), "left_eye": (0.25, -1.0), "right_ear": (-0.5, -0.85), "left_ear": (0.5, -0.85),
}


def figure(neck_x, neck_y, head, rotate=0.0):
    """A Person: FIGURE scaled to `head` pixels, turned by `rotate` radians about its neck."""
    cos, sin = math.cos(rotate), math.sin(rotate)

    def place(x, y):
        return (neck_x + head * (x * cos - y * sin), neck_y + head * (x * sin + y * cos))

    return Person(body=[place(*FIGURE[name]) for name in BODY_KEYPOINTS])


def hand(wrist, spread, rng):
    """21 hand points fanning out from the wrist."""
    points = [wrist]
    for finger in range(5):
        angle = -1.2 + 0.55 * finger + rng.uniform(-0.1, 0.1)
        for joint in range(1, 5):
            reach = spread * (0.6 + 0.3 * joint)
            points.append((wrist[0] + reach * math.sin(angle), wrist[1] + reach * math.cos(angle)))
    return points


def face(center, size):
    """70 points on an oval."""
    return [
        (center[0] + size * math.cos(2 * math.pi * i / FACE_KEYPOINT_COUNT),
         center[1] + 1.3 * size * math.sin(2 * math.pi * i / FACE_KEYPOINT_COUNT))
        for i in range(FACE_KEYPOINT_COUNT)
    ]


def as_reference_floats(people, width, height):
    """The people with each point as the annotator recomputes it from its normalised value (x / W * W).

    Both drawings then start from bit-identical pixel coordinates.
    """

    def same(points):
        if points is None:
            return None
        return [None if p is None else (p[0] / width * width, p[1] / height * height) for p in points]

    return [Person(same(p.body), same(p.left_hand), same(p.right_hand), same(p.face)) for p in people]


def compare_with_reference(people, width, height):
    people = as_reference_floats(people, width, height)
    ours = draw_openpose(people, width, height)
    theirs = reference_draw_poses()(reference_poses(people, width, height), height, width)
    return ours, theirs


def differing_pixels(a, b):
    return int(np.count_nonzero((a != b).any(axis=2)))


def random_people(rng, width, height, count):
    people = []
    for _ in range(count):
        head = rng.uniform(0.04, 0.12) * height
        person = figure(rng.uniform(0, width), rng.uniform(0, height), head, rng.uniform(-math.pi, math.pi))
        for i in rng.sample(range(len(BODY_KEYPOINTS)), rng.randint(0, 4)):
            person.body[i] = None
        if rng.random() < 0.7:
            wrist = person.body[J["right_wrist"]] or (rng.uniform(0, width), rng.uniform(0, height))
            person.right_hand = hand(wrist, head * 0.4, rng)
        if rng.random() < 0.7:
            wrist = person.body[J["left_wrist"]] or (rng.uniform(0, width), rng.uniform(0, height))
            person.left_hand = hand(wrist, head * 0.4, rng)
            person.left_hand[rng.randrange(21)] = None
        if rng.random() < 0.7:
            person.face = face(person.body[J["nose"]] or (width / 2, height / 2), head * 0.35)
        for points in (person.body, person.left_hand, person.right_hand, person.face):
            if points is not None:  # what the scene reader does with points outside the frame
                points[:] = [p if p and 0 <= p[0] < width and 0 <= p[1] < height else None for p in points]
        people.append(person)
    return people


# Identical pixels are required: the drawing reproduces OpenCV's integer rasterisation exactly.
# Measured difference against controlnet_aux 0.0.10 with OpenCV 4.11: 0 pixels in every case.


def test_one_figure_matches_the_reference_annotator():
    ours, theirs = compare_with_reference([figure(256.5, 150.5, 40)], 512, 512)
    assert ours.any()
    assert differing_pixels(ours, theirs) == 0


def test_figure_with_hands_and_face_on_a_wide_canvas_matches_the_reference():
    rng = random.Random(3)
    person = figure(384.5, 200.5, 45, rotate=0.2)
    person.right_hand = hand(person.body[J["right_wrist"]], 18, rng)
    person.left_hand = hand(person.body[J["left_wrist"]], 18, rng)
    person.left_hand[7] = None
    person.face = face(person.body[J["nose"]], 14)
    ours, theirs = compare_with_reference([person], 768, 512)
    assert differing_pixels(ours, theirs) == 0


def test_points_on_the_canvas_border_match_the_reference():
    width, height = 320, 240
    person = Person()
    person.body[J["nose"]] = (0.5, 0.5)  # column and row 0
    person.body[J["neck"]] = (width - 0.5, 120.5)
    person.body[J["right_shoulder"]] = (160.5, height - 0.5)
    person.body[J["left_shoulder"]] = (0.0, 239.9)
    person.body[J["right_hip"]] = (319.9, 0.0)
    person.left_hand = [(0.5 + 15 * i, 2.5 + i % 3) for i in range(21)]  # the annotator skips column 0
    person.right_hand = [(width - 1.5 - 3 * i, height - 0.5 - 11 * i) for i in range(21)]
    person.face = [(0.2 + 4.6 * i, 0.7) for i in range(FACE_KEYPOINT_COUNT)]
    ours, theirs = compare_with_reference([person], width, height)
    assert ours[0, 0].any() and ours[height - 1, width - 1].any()
    assert differing_pixels(ours, theirs) == 0


@pytest.mark.parametrize("seed", range(12))
def test_random_crowds_match_the_reference(seed):
    rng = random.Random(seed)
    width, height = rng.choice([(512, 512), (768, 512), (512, 896), (1024, 1024), (333, 257)])
    people = random_people(rng, width, height, rng.randint(1, 4))
    ours, theirs = compare_with_reference(people, width, height)
    assert differing_pixels(ours, theirs) == 0


def test_colours_are_rgb_with_limbs_at_sixty_percent():
    person = figure(256.5, 150.5, 40)
    image = draw_openpose([person], 512, 512)
    nose = person.body[J["nose"]]
    assert tuple(image[int(nose[1]), int(nose[0])]) == (255, 0, 0)  # red, not BGR's blue
    # Limb 2 (from 0) is the right upper arm, shoulder to elbow: orange (255, 170, 0) at 60 %.
    (x1, y1), (x2, y2) = person.body[J["right_shoulder"]], person.body[J["right_elbow"]]
    assert tuple(image[int((y1 + y2) / 2), int((x1 + x2) / 2)]) == (153, 102, 0)
    # Limb 11 is the left shin, knee to ankle: (0, 85, 255) at 60 %.
    (x1, y1), (x2, y2) = person.body[J["left_knee"]], person.body[J["left_ankle"]]
    assert tuple(image[int((y1 + y2) / 2), int((x1 + x2) / 2)]) == (0, 51, 153)
    assert tuple(image[0, 0]) == BLACK


def test_joints_are_circles_of_radius_four_in_their_palette_colour():
    person = Person()
    person.body[J["right_knee"]] = (100.5, 100.5)
    image = draw_openpose([person], 200, 200)
    lit = np.argwhere(image.any(axis=2))
    assert lit.min(axis=0).tolist() == [96, 96] and lit.max(axis=0).tolist() == [104, 104]
    assert {tuple(image[y, x]) for y, x in lit} == {BODY_COLORS[J["right_knee"]]}


def test_missing_joints_and_their_limbs_draw_nothing():
    full = figure(256.5, 150.5, 40)
    partial = figure(256.5, 150.5, 40)
    partial.body[J["left_elbow"]] = None
    with_elbow = draw_openpose([full], 512, 512)
    without = draw_openpose([partial], 512, 512)
    # Both limbs at the elbow go: the midpoints of the upper and lower left arm are black.
    for a, b in (("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist")):
        (x1, y1), (x2, y2) = full.body[J[a]], full.body[J[b]]
        middle = (int((y1 + y2) / 2), int((x1 + x2) / 2))
        assert with_elbow[middle].any()
        assert tuple(without[middle]) == BLACK
    assert not draw_openpose([Person()], 64, 64).any()


def test_points_off_the_canvas_count_as_missing():
    inside = figure(100.5, 60.5, 15)
    outside = figure(100.5, 60.5, 15)
    outside.body[J["left_ankle"]] = (150.0, 400.0)
    inside.body[J["left_ankle"]] = None
    assert np.array_equal(draw_openpose([outside], 200, 200), draw_openpose([inside], 200, 200))
    pose = openpose_json([outside], 200, 200)["people"][0]["pose_keypoints_2d"]
    assert pose[3 * J["left_ankle"] : 3 * J["left_ankle"] + 3] == [0.0, 0.0, 0.0]


def limb_thickness(image, column):
    return int(np.count_nonzero(image[:, column].any(axis=1)))


def test_stick_scale_thickens_the_body():
    person = Person()
    person.body[J["right_hip"]] = (50.5, 100.5)
    person.body[J["right_knee"]] = (250.5, 100.5)  # a horizontal thigh, joints far from column 150
    thin = draw_openpose([person], 300, 200)
    thick = draw_openpose([person], 300, 200, stick_scale=2.0)
    assert limb_thickness(thin, 150) == 2 * 4 + 1
    assert limb_thickness(thick, 150) == 2 * 8 + 1
    assert limb_thickness(thick, 50) == 2 * 8 + 1  # the joint's radius doubles too


def test_sdxl_stick_scale_follows_the_sdxl_models_drawing():
    assert sdxl_stick_scale(512, 384) == 2
    assert sdxl_stick_scale(1024, 1024) == 3
    assert sdxl_stick_scale(832, 1216) == 3
    assert sdxl_stick_scale(480, 320) == 1
    assert sdxl_stick_scale(2048, 2048) == 4
    assert sdxl_stick_scale(9000, 100) == 7


def test_json_has_openpose_layout_and_zero_confidence_for_missing_points():
    first = figure(100.5, 60.5, 15)
    first.body[J["left_ear"]] = None
    first.right_hand = [(10.0 + i, 20.0) for i in range(21)]
    first.right_hand[4] = None
    first.face = [(30.0, 40.0 + i * 0.5) for i in range(FACE_KEYPOINT_COUNT)]
    second = figure(150.5, 60.5, 15)
    document = openpose_json([first, second], 200, 150)
    assert document["canvas_width"] == 200 and document["canvas_height"] == 150
    one, two = document["people"]
    assert set(one) == {"pose_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d", "face_keypoints_2d"}
    assert len(one["pose_keypoints_2d"]) == 3 * len(BODY_KEYPOINTS)
    nose = first.body[J["nose"]]
    assert one["pose_keypoints_2d"][0:3] == [nose[0], nose[1], 1.0]
    ear = 3 * J["left_ear"]
    assert one["pose_keypoints_2d"][ear : ear + 3] == [0.0, 0.0, 0.0]
    assert one["hand_left_keypoints_2d"] == []
    assert len(one["hand_right_keypoints_2d"]) == 3 * len(HAND_KEYPOINTS)
    assert one["hand_right_keypoints_2d"][0:3] == [10.0, 20.0, 1.0]
    assert one["hand_right_keypoints_2d"][12:15] == [0.0, 0.0, 0.0]
    assert one["face_keypoints_2d"][-3:] == [30.0, 40.0 + 69 * 0.5, 1.0]
    assert len(one["face_keypoints_2d"]) == 3 * FACE_KEYPOINT_COUNT
    assert two["face_keypoints_2d"] == [] and two["hand_right_keypoints_2d"] == []
    assert two["pose_keypoints_2d"][3:6] == [150.5, 60.5, 1.0]
