import pytest

from sd_blender.core.keypoints import BODY_KEYPOINTS, FACE_KEYPOINT_COUNT, HAND_KEYPOINTS
from sd_blender.core.rigs import (
    HEAD,
    KEYPOINT_IDS,
    LEFT,
    LEFT_EAR_FROM_HEAD,
    NOSE_FROM_HEAD,
    NOT_RECOGNISED,
    RIGHT,
    TAIL,
    BoneEnd,
    FromHead,
    Midpoint,
    map_rig,
    point_from_head,
    split_side,
)

LIMB_WORDS = ("upper_arm", "forearm", "hand", "thigh", "shin", "foot")


def sided(templates, left="L", right="R"):
    return [template.format(side=side) for template in templates for side in (left, right)]


RIGIFY_BODY = ["spine.004", "spine.006"] + sided([word + ".{side}" for word in LIMB_WORDS])
MIXAMO_BODY = ["mixamorig:Neck", "mixamorig:Head"] + sided(
    ["mixamorig:{side}" + word for word in ("Arm", "ForeArm", "Hand", "UpLeg", "Leg", "Foot")], "Left", "Right"
)
UNREAL_BODY = ["neck_01", "head"] + sided([word + "_{side}" for word in ("upperarm", "lowerarm", "hand")], "l", "r")
VRM_BODY = ["neck", "head"] + sided(["{side}" + word for word in ("UpperArm", "LowerArm", "Hand")], "left", "right")
GENERIC_BODY = ["Neck", "Head"] + sided(["Arm_{side}", "Forearm_{side}", "Thigh_{side}", "Calf_{side}"])
VROID_BODY = ["J_Bip_C_Neck", "J_Bip_C_Head"] + sided(["J_Bip_{side}_" + word for word in ("UpperArm", "Hand")])


def source(names, keypoint, overrides=()):
    return map_rig(names, overrides).sources.get(keypoint)


def test_keypoint_ids_cover_body_both_hands_and_face_once():
    assert len(KEYPOINT_IDS) == len(set(KEYPOINT_IDS)) == 18 + 2 * 21 + 70
    assert KEYPOINT_IDS[:18] == BODY_KEYPOINTS
    assert "left_hand.thumb_4" in KEYPOINT_IDS and "right_hand.wrist" in KEYPOINT_IDS and "face.69" in KEYPOINT_IDS


@pytest.mark.parametrize(
    "names, preset",
    [
        (RIGIFY_BODY, "Rigify metarig"),
        (["DEF-" + name for name in RIGIFY_BODY], "Rigify rig"),
        (["ORG-" + name for name in RIGIFY_BODY], "Rigify rig"),
        (MIXAMO_BODY, "Mixamo"),
        ([name.replace("mixamorig:", "mixamorig7:") for name in MIXAMO_BODY], "Mixamo"),
        ([name.replace("mixamorig:", "") for name in MIXAMO_BODY], "Mixamo"),
        (UNREAL_BODY, "Unreal mannequin"),
        (VRM_BODY, "VRM"),
        (VROID_BODY, "VRoid"),
        (GENERIC_BODY, "Generic left/right"),
        (sided(["{side}_upperarm", "{side}_lowerarm", "{side}_upperleg"], "left", "right"), "Generic left/right"),
        (sided(["{side}.Arm", "{side}.Leg"]), "Generic left/right"),
        (["Bone", "Bone.001", "wheel.L", "wheel.R", "door_l"], NOT_RECOGNISED),
        (["upper_arm.L", "forearm.L", "hand.L"], NOT_RECOGNISED),  # one arm is too little
    ],
)
def test_presets_are_recognised_from_bone_names(names, preset):
    assert map_rig(names).preset == preset


def test_names_match_ignoring_case():
    names = [name.upper() for name in MIXAMO_BODY]
    assert map_rig(names).preset == "Mixamo"
    assert source(names, "left_elbow") == BoneEnd("MIXAMORIG:LEFTFOREARM", HEAD)


def test_exact_names_win_over_names_differing_in_case():
    names = ["Hand.L"] + RIGIFY_BODY  # the first of the case-insensitive matches
    assert source(names, "left_wrist") == BoneEnd("hand.L", HEAD)


def test_a_generated_rigify_rig_prefers_deform_bones_and_falls_back_to_originals():
    names = [prefix + name for name in RIGIFY_BODY for prefix in ("ORG-", "DEF-")] + ["ORG-eye.L", "ORG-eye.R"]
    assert source(names, "left_shoulder") == BoneEnd("DEF-upper_arm.L", HEAD)
    assert source(names, "left_eye") == BoneEnd("ORG-eye.L", TAIL)


def test_body_joints_are_bone_heads():
    expected = {
        "neck": "spine.004",
        "right_shoulder": "upper_arm.R",
        "right_elbow": "forearm.R",
        "right_wrist": "hand.R",
        "left_hip": "thigh.L",
        "left_knee": "shin.L",
        "left_ankle": "foot.L",
    }
    for keypoint, bone in expected.items():
        assert source(RIGIFY_BODY, keypoint) == BoneEnd(bone, HEAD)


def test_missing_hand_and_foot_bones_fall_back_to_the_limb_above_it_tail():
    names = [name for name in RIGIFY_BODY if not name.startswith(("hand", "foot"))]
    assert source(names, "left_wrist") == BoneEnd("forearm.L", TAIL)
    assert source(names, "right_ankle") == BoneEnd("shin.R", TAIL)


def test_without_a_neck_bone_the_neck_is_between_the_shoulders():
    names = [name for name in RIGIFY_BODY if name != "spine.004"]
    assert source(names, "neck") == Midpoint(BoneEnd("upper_arm.R"), BoneEnd("upper_arm.L"))


def test_without_face_bones_nose_eyes_and_ears_hang_on_the_head_bone():
    nose = source(RIGIFY_BODY, "nose")
    assert nose == FromHead("spine.006", NOSE_FROM_HEAD, BoneEnd("upper_arm.R"), BoneEnd("upper_arm.L"))
    assert source(RIGIFY_BODY, "left_eye").offset.left > 0 > source(RIGIFY_BODY, "right_eye").offset.left
    assert map_rig(RIGIFY_BODY).person({}).face is None


def test_without_a_head_bone_there_is_no_nose():
    assert source([name for name in RIGIFY_BODY if name != "spine.006"], "nose") is None


def test_eye_bones_give_the_eyes_but_no_face():
    rig = map_rig(RIGIFY_BODY + ["eye.L", "eye.R"])
    assert rig.sources["right_eye"] == BoneEnd("eye.R", TAIL)
    assert rig.person({}).face is None


def test_rigify_face_bones_give_face_landmarks_and_pupils():
    face = ["nose", "nose.001", "nose.002", "chin", "jaw.L", "jaw.R", "lid.T.L", "lid.T.R", "eye.L", "eye.R"]
    names = RIGIFY_BODY + face
    rig = map_rig(names)
    assert rig.sources["face.30"] == rig.sources["nose"] == BoneEnd("nose.002", HEAD)
    assert rig.sources["face.8"] == BoneEnd("chin", HEAD)
    assert (rig.sources["face.0"], rig.sources["face.16"]) == (BoneEnd("jaw.R"), BoneEnd("jaw.L"))
    assert (rig.sources["face.36"], rig.sources["face.45"]) == (BoneEnd("lid.T.R"), BoneEnd("lid.T.L"))
    assert (rig.sources["face.68"], rig.sources["face.69"]) == (BoneEnd("eye.R", TAIL), BoneEnd("eye.L", TAIL))
    face = rig.person({"face.8": (5, 6)}).face
    assert len(face) == FACE_KEYPOINT_COUNT and face[8] == (5, 6) and face[60] is None


def test_finger_points_are_bone_heads_then_the_last_tail():
    thumbs = sided(["thumb.01.{side}", "thumb.02.{side}", "thumb.03.{side}"])
    names = RIGIFY_BODY + thumbs + ["f_index.01.L", "f_index.02.L"]
    rig = map_rig(names)
    assert [rig.sources.get(f"left_hand.thumb_{joint}") for joint in (1, 2, 3, 4)] == [
        BoneEnd("thumb.01.L"),
        BoneEnd("thumb.02.L"),
        BoneEnd("thumb.03.L"),
        BoneEnd("thumb.03.L", TAIL),
    ]
    assert [rig.sources.get(f"left_hand.index_{joint}") for joint in (1, 2, 3, 4)] == [
        BoneEnd("f_index.01.L"),
        BoneEnd("f_index.02.L"),
        BoneEnd("f_index.02.L", TAIL),
        None,
    ]
    assert rig.sources["left_hand.wrist"] == BoneEnd("hand.L")
    assert len(rig.person({}).left_hand) == len(HAND_KEYPOINTS)


def test_no_finger_bones_no_hands():
    person = map_rig(RIGIFY_BODY).person({})
    assert person.left_hand is None and person.right_hand is None


@pytest.mark.parametrize(
    "thumb, metacarpal",
    [
        (["leftThumbMetacarpal", "leftThumbProximal", "leftThumbDistal"], "leftThumbMetacarpal"),  # VRM 1.0
        (["leftThumbProximal", "leftThumbIntermediate", "leftThumbDistal"], "leftThumbProximal"),  # VRM 0.x
    ],
)
def test_vrm_thumbs_start_at_the_metacarpal_in_both_versions(thumb, metacarpal):
    names = ["neck", "head"] + sided(["{side}UpperArm", "{side}LowerArm", "{side}Hand"], "left", "right") + thumb
    rig = map_rig(names)
    assert rig.sources["left_hand.thumb_1"] == BoneEnd(metacarpal)
    assert rig.sources["left_hand.thumb_4"] == BoneEnd("leftThumbDistal", TAIL)


@pytest.mark.parametrize(
    "names, bone",
    [
        (MIXAMO_BODY, "mixamorig:LeftHandPinky1"),
        (UNREAL_BODY, "pinky_01_l"),
        (VRM_BODY, "leftLittleProximal"),
        (VROID_BODY, "J_Bip_L_Little1"),
        (GENERIC_BODY, "Little_01_L"),
    ],
)
def test_little_fingers_are_pinkies(names, bone):
    assert source(names + [bone], "left_hand.pinky_1") == BoneEnd(bone)


def test_first_of_two_generic_bones_of_the_same_kind_wins():
    names = ["Neck", "Head"] + sided(["Arm_{side}", "Thigh_{side}"]) + ["arm.L"]
    assert source(names, "left_shoulder") == BoneEnd("Arm_L")


def test_twist_and_ik_bones_are_not_limbs():
    names = ["neck", "head"] + sided(
        ["upperarm_twist_01_{side}", "ik_foot_{side}", "upperarm_{side}", "thigh_{side}"], "l", "r"
    )
    rig = map_rig(names)
    assert rig.sources["left_shoulder"] == BoneEnd("upperarm_l")
    assert "left_ankle" not in rig.sources


@pytest.mark.parametrize(
    "name, side, rest",
    [
        ("upper_arm.L", LEFT, "upper_arm"),
        ("UpperArm_R", RIGHT, "UpperArm"),
        ("calf_r", RIGHT, "calf"),
        ("LeftForeArm", LEFT, "ForeArm"),
        ("right_foot", RIGHT, "foot"),
        ("L_Hand", LEFT, "Hand"),
        ("Thigh-l", LEFT, "Thigh"),
        ("ArmRight", RIGHT, "Arm"),
        ("Spine", None, "Spine"),
        ("Hips", None, "Hips"),
        ("Leg", None, "Leg"),
    ],
)
def test_side_markers(name, side, rest):
    assert split_side(name) == (side, rest)


def test_overrides_win_over_the_preset_and_bad_ones_are_ignored():
    overrides = [
        ("nose", "hand.L", "tail"),
        ("left_elbow", "no such bone", "head"),
        ("no such keypoint", "hand.L", "head"),
        ("face.30", "spine.006", "tail"),
    ]
    rig = map_rig(RIGIFY_BODY, overrides)
    assert rig.sources["nose"] == BoneEnd("hand.L", TAIL)
    assert rig.sources["left_elbow"] == BoneEnd("forearm.L", HEAD)
    assert "no such keypoint" not in rig.sources
    assert rig.person({"face.30": (1, 2)}).face[30] == (1, 2)


def test_overrides_alone_map_an_unrecognised_rig():
    rig = map_rig(["Bone", "Bone.001"], [("right_hand.wrist", "Bone.001", "head")])
    assert rig.preset == NOT_RECOGNISED
    assert rig.sources == {"right_hand.wrist": BoneEnd("Bone.001", HEAD)}
    person = rig.person({"right_hand.wrist": (3, 4)})
    assert person.right_hand[0] == (3, 4) and person.left_hand is None
    assert map_rig(["Bone"]).sources == {}


def test_locate_reads_bone_ends_and_leaves_missing_bones_out():
    rig = map_rig([name for name in RIGIFY_BODY if name != "spine.004"])
    ends = {
        "upper_arm.L": ((0.2, 0, 1.4), (0.45, 0, 1.4)),
        "upper_arm.R": ((-0.2, 0, 1.4), (-0.45, 0, 1.4)),
        "forearm.L": ((0.45, 0, 1.4), (0.7, 0, 1.4)),
    }
    points = rig.locate(ends)
    assert points["left_elbow"] == (0.45, 0, 1.4)
    assert points["neck"] == pytest.approx((0, 0, 1.4))
    assert points["left_wrist"] is None
    assert rig.bones() >= {"spine.006", "upper_arm.L", "hand.R"}


def test_person_puts_pixels_in_openpose_order():
    person = map_rig(RIGIFY_BODY).person({"neck": (10, 20), "left_ankle": (30, 40)})
    assert person.body[1] == (10, 20) and person.body[13] == (30, 40)
    assert person.body.count(None) == 16


HEAD_BONE = ((0.0, 0.0, 1.5), (0.0, 0.0, 1.75))  # 0.25 long, upright
SHOULDERS_FACING_MINUS_Y = ((-0.2, 0.0, 1.4), (0.2, 0.0, 1.4))  # right, left


def test_head_offset_is_up_forward_and_left_in_head_lengths():
    nose = point_from_head(*HEAD_BONE, *SHOULDERS_FACING_MINUS_Y, NOSE_FROM_HEAD)
    assert nose == pytest.approx((0.0, -NOSE_FROM_HEAD.forward * 0.25, 1.5 + NOSE_FROM_HEAD.up * 0.25))


def test_forward_follows_the_body_not_the_world():
    facing_plus_x = ((0.0, -0.2, 1.4), (0.0, 0.2, 1.4))  # the right shoulder at -Y
    nose = point_from_head(*HEAD_BONE, *facing_plus_x, NOSE_FROM_HEAD)
    assert nose[0] > 0.2 and nose[1] == pytest.approx(0.0)
    left_ear = point_from_head(*HEAD_BONE, *facing_plus_x, LEFT_EAR_FROM_HEAD)
    assert left_ear[1] > 0.1


def test_a_bowed_head_brings_the_nose_down():
    bowed = ((0.0, 0.0, 1.5), (0.0, -0.25, 1.5))  # the head bone points forward
    nose = point_from_head(*bowed, *SHOULDERS_FACING_MINUS_Y, NOSE_FROM_HEAD)
    assert nose[2] < 1.5 - 0.15 and nose[0] == pytest.approx(0.0)


def test_a_shrugged_shoulder_does_not_move_the_nose():
    shrugged = ((-0.2, 0.0, 1.4), (0.2, 0.0, 1.55))
    square = point_from_head(*HEAD_BONE, *SHOULDERS_FACING_MINUS_Y, NOSE_FROM_HEAD)
    assert point_from_head(*HEAD_BONE, *shrugged, NOSE_FROM_HEAD) == pytest.approx(square)
