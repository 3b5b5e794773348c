"""OpenPose keypoints read from armatures: every rig naming, posed, animated and constrained,
through perspective and orthographic cameras; overrides; which armatures count as people.

Expected pixels come from the pinhole (or orthographic) camera model and the bones' known
positions, not from the add-on's projection. The scene's own render size is portrait and the
keypoints are asked for a landscape image: they must follow the asked size.
"""
import math

import bpy
import pytest
from rigs import (
    BODY,
    FINGERS,
    NAMINGS,
    arm_raise,
    build_humanoid,
    load_objects,
    orthographic_pixel,
    pinhole_pixel,
    pose_bone_about,
    rest_bone,
    rigify_rigs_blend,
)
from scenes import add_camera, set_resolution

import sd_blender
from sd_blender.core.keypoints import BODY_KEYPOINTS, HAND_KEYPOINTS
from sd_blender.scene.pose import rig_preset_name, scene_people

WIDTH, HEIGHT = 640, 512
CAMERA = (0.0, -5.0, 1.0)
TOLERANCE = 2.0  # pixels
JOINT_PARTS = {
    "shoulder": "upper_arm",
    "elbow": "forearm",
    "wrist": "hand",
    "hip": "thigh",
    "knee": "shin",
    "ankle": "foot",
}
ARM_UP, arm_up = arm_raise(BODY["upper_arm"][0], math.radians(90))  # the left arm, straight up


@pytest.fixture
def scene(empty_scene):
    set_resolution(empty_scene, 400, 800)
    add_camera(empty_scene, location=CAMERA)
    return empty_scene


@pytest.fixture(scope="session")
def rigify_blend(tmp_path_factory):
    path = tmp_path_factory.mktemp("rigify") / "rigify_rigs.blend"
    rigify_rigs_blend(path)
    return path


def body_point(person, name):
    return person.body[BODY_KEYPOINTS.index(name)]


def hand_point(hand, name):
    return hand[HAND_KEYPOINTS.index(name)]


def assert_near(actual, expected):
    assert actual is not None, f"missing, expected at {expected}"
    assert math.dist(actual, expected) <= TOLERANCE, f"at {actual}, expected at {expected}"


def seen(point):
    return pinhole_pixel(point, CAMERA, WIDTH, HEIGHT)


def only_person(scene):
    people = scene_people(scene, WIDTH, HEIGHT)
    assert len(people) == 1
    return people[0]


def humanoid_bone(part, side, end="head"):
    """Where a bone's head or tail is once the humanoid has raised its left arm straight up."""
    point = rest_bone(part, side)[0 if end == "head" else 1]
    in_left_arm = side == "left" and (part in ("forearm", "hand") or part[:-1] in FINGERS)
    return arm_up(point) if in_left_arm else point


def expected_body(naming):
    expected = {"neck": BODY["neck"][0]}
    for side in ("left", "right"):
        for joint, part in JOINT_PARTS.items():
            expected[f"{side}_{joint}"] = humanoid_bone(part, side)
        if "eye" in naming.parts:
            expected[f"{side}_eye"] = humanoid_bone("eye", side, naming.eye_end)
    return expected


def expected_hand(side):
    """Wrist at the hand's head; per finger its three bones' heads, then the last one's tail."""
    expected = {"wrist": humanoid_bone("hand", side)}
    for finger in FINGERS:
        for joint in (1, 2, 3):
            expected[f"{finger}_{joint}"] = humanoid_bone(f"{finger}{joint}", side)
        expected[f"{finger}_4"] = humanoid_bone(f"{finger}3", side, "tail")
    return expected


@pytest.mark.parametrize("naming", NAMINGS.values(), ids=NAMINGS.keys())
def test_each_rig_naming_puts_the_joints_on_its_posed_bones(scene, naming):
    armature = build_humanoid(scene, naming)
    pose_bone_about(armature, naming.bone_name("upper_arm"), ARM_UP)
    assert rig_preset_name(armature) == naming.preset
    person = only_person(scene)
    for name, point in expected_body(naming).items():
        assert_near(body_point(person, name), seen(point))
    for side, hand in (("left", person.left_hand), ("right", person.right_hand)):
        if naming.fingers:
            for name, point in expected_hand(side).items():
                assert_near(hand_point(hand, name), seen(point))
        else:
            assert hand is None
    assert person.face is None


def test_the_raised_arm_shows_above_the_shoulder(scene):
    armature = build_humanoid(scene, NAMINGS["mixamo"])
    pose_bone_about(armature, "mixamorig:LeftArm", ARM_UP)
    person = only_person(scene)
    shoulder, elbow, wrist = (body_point(person, f"left_{joint}") for joint in ("shoulder", "elbow", "wrist"))
    assert wrist[1] < elbow[1] - 30 < shoulder[1] - 60
    assert abs(wrist[0] - shoulder[0]) < 1


def test_the_subjects_right_is_on_the_image_left_when_facing_the_camera(scene):
    build_humanoid(scene, NAMINGS["unreal"])
    person = only_person(scene)
    for joint in ("shoulder", "hip", "eye", "ear"):
        assert body_point(person, f"right_{joint}")[0] < WIDTH / 2 < body_point(person, f"left_{joint}")[0]


def test_nose_from_the_head_bone_is_in_front_of_the_face_below_the_top_of_the_skull(scene):
    """A rig without face bones, turned to face +X: the nose points right in the image."""
    armature = build_humanoid(scene, NAMINGS["unreal"])
    armature.rotation_euler.z = math.radians(90)
    person = only_person(scene)
    nose = body_point(person, "nose")
    head_base, skull_top = seen(BODY["head"][0]), seen(BODY["head"][1])
    assert nose[0] > head_base[0] + 15
    assert skull_top[1] + 10 < nose[1] < head_base[1]
    assert nose[1] < body_point(person, "neck")[1]
    ear = body_point(person, "left_ear")
    assert head_base[0] - 5 < ear[0] < nose[0] - 15


def test_joints_outside_the_frame_are_missing(empty_scene):
    add_camera(empty_scene, location=(0.0, -2.0, 1.6))  # a close-up of the head and shoulders
    build_humanoid(empty_scene, NAMINGS["vrm1"])
    person = only_person(empty_scene)
    for name in ("left_ankle", "right_ankle", "left_knee", "right_knee"):
        assert body_point(person, name) is None
    assert_near(body_point(person, "neck"), pinhole_pixel(BODY["neck"][0], (0.0, -2.0, 1.6), WIDTH, HEIGHT))


def test_an_armature_behind_the_camera_has_no_keypoints(scene):
    build_humanoid(scene, NAMINGS["vrm0"], location=(0.0, -8.0, 0.0))
    person = only_person(scene)
    assert person.body == [None] * len(BODY_KEYPOINTS)
    assert person.left_hand == [None] * len(HAND_KEYPOINTS)


def test_orthographic_camera(empty_scene):
    camera_location, scale = (0.5, -5.0, 1.0), 4.0
    add_camera(empty_scene, location=camera_location, orthographic_scale=scale)
    build_humanoid(empty_scene, NAMINGS["vroid"])
    person = only_person(empty_scene)
    for name, point in expected_body(NAMINGS["vroid"]).items():
        if name not in ("left_elbow", "left_wrist"):  # not raised here
            assert_near(body_point(person, name), orthographic_pixel(point, camera_location, WIDTH, HEIGHT, scale))
    assert_near(
        hand_point(person.right_hand, "pinky_4"),
        orthographic_pixel(rest_bone("pinky3", "right")[1], camera_location, WIDTH, HEIGHT, scale),
    )


def test_two_armatures_are_two_people_in_name_order(scene):
    build_humanoid(scene, NAMINGS["mixamo"], name="Zoe", location=(-1.0, 0.0, 0.0))
    build_humanoid(scene, NAMINGS["generic_dot_L"], name="Adam", location=(1.0, 0.0, 0.0))
    adam, zoe = scene_people(scene, WIDTH, HEIGHT)
    assert_near(body_point(adam, "neck"), seen((1.0, 0.0, BODY["neck"][0][2])))
    assert_near(body_point(zoe, "neck"), seen((-1.0, 0.0, BODY["neck"][0][2])))


def hide_from_renders(armature):
    armature.hide_render = True


def in_excluded_collection(armature):
    collection = bpy.data.collections.new("Excluded")
    bpy.context.scene.collection.children.link(collection)
    bpy.context.scene.collection.objects.unlink(armature)
    collection.objects.link(armature)
    bpy.context.view_layer.layer_collection.children["Excluded"].exclude = True


def in_collection_disabled_in_renders(armature):
    collection = bpy.data.collections.new("Not rendered")
    bpy.context.scene.collection.children.link(collection)
    collection.children.link(bpy.data.collections.new("Child"))
    bpy.context.scene.collection.objects.unlink(armature)
    bpy.data.collections["Child"].objects.link(armature)
    collection.hide_render = True


@pytest.mark.parametrize("hide", [hide_from_renders, in_excluded_collection, in_collection_disabled_in_renders])
def test_armatures_a_render_does_not_show_are_no_people(scene, hide):
    hide(build_humanoid(scene, NAMINGS["mixamo"]))
    assert scene_people(scene, WIDTH, HEIGHT) == []


def test_hidden_only_in_the_viewport_still_counts(scene):
    armature = build_humanoid(scene, NAMINGS["mixamo"])
    armature.hide_set(True)
    armature.hide_viewport = True
    assert len(scene_people(scene, WIDTH, HEIGHT)) == 1


def add_crane(scene):
    """An armature that is no humanoid: three bones "Bone", "Bone.001", "Bone.002" stacked up
    from the origin, each one unit long."""
    armature = bpy.data.objects.new("Crane", bpy.data.armatures.new("Crane"))
    scene.collection.objects.link(armature)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    for index in range(3):
        bone = armature.data.edit_bones.new("Bone")
        bone.head, bone.tail = (0, 0, index), (0, 0, index + 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    return armature


def test_an_armature_that_is_no_humanoid_is_not_recognised(scene):
    armature = add_crane(scene)
    assert rig_preset_name(armature) == "not recognised"
    assert scene_people(scene, WIDTH, HEIGHT) == []


def test_the_pose_at_the_current_frame_of_an_action_shows(scene):
    armature = build_humanoid(scene, NAMINGS["rigify_names"])
    upper_arm = armature.pose.bones["upper_arm.L"]
    upper_arm.keyframe_insert("rotation_quaternion", frame=1)
    pose_bone_about(armature, "upper_arm.L", ARM_UP)
    upper_arm.keyframe_insert("rotation_quaternion", frame=10)
    scene.frame_set(10)
    assert_near(body_point(only_person(scene), "left_wrist"), seen(humanoid_bone("hand", "left")))
    scene.frame_set(1)
    assert_near(body_point(only_person(scene), "left_wrist"), seen(BODY["hand"][0]))


def test_a_constraint_shows(scene):
    armature = build_humanoid(scene, NAMINGS["generic_prefix"])
    target = bpy.data.objects.new("Above the shoulder", None)
    target.location = (0.2, 0.0, 3.0)
    scene.collection.objects.link(target)
    track = armature.pose.bones["Left_UpperArm"].constraints.new("DAMPED_TRACK")
    track.target = target
    assert_near(body_point(only_person(scene), "left_wrist"), seen(humanoid_bone("hand", "left")))


@pytest.fixture
def registered(scene):
    sd_blender.register()
    yield scene
    sd_blender.unregister()


def test_an_override_moves_a_keypoint_and_is_saved_with_the_armature(registered, tmp_path):
    armature = build_humanoid(registered, NAMINGS["mixamo"])
    override = armature.data.sd_blender_keypoints.add()
    override.keypoint, override.bone, override.end = "nose", "mixamorig:LeftHand", "TAIL"
    hand_tail = seen(BODY["hand"][1])
    assert_near(body_point(only_person(registered), "nose"), hand_tail)
    path = str(tmp_path / "override.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    assert_near(body_point(only_person(bpy.context.scene), "nose"), hand_tail)


def test_overrides_make_a_person_of_an_unrecognised_rig(registered):
    armature = add_crane(registered)
    override = armature.data.sd_blender_keypoints.add()
    override.keypoint, override.bone = "left_hand.wrist", "Bone.001"
    person = only_person(registered)
    assert_near(hand_point(person.left_hand, "wrist"), seen((0, 0, 1)))
    assert person.body == [None] * len(BODY_KEYPOINTS) and person.right_hand is None


# Rigify's own rigs, made by Rigify in a child process.


def rigify_rig(scene, rigify_blend, name):
    (armature,) = load_objects(rigify_blend, [name], scene)
    return armature


def rest_point(armature, bone_name, end="head"):
    """A bone's head or tail at rest, in world space."""
    bone = armature.data.bones[bone_name]
    return tuple(armature.matrix_world @ (bone.head_local if end == "head" else bone.tail_local))


def test_rigify_metarig_body_and_hands(scene, rigify_blend):
    metarig = rigify_rig(scene, rigify_blend, "metarig")
    about, move = arm_raise(metarig.data.bones["upper_arm.L"].head_local, math.radians(60))
    pose_bone_about(metarig, "upper_arm.L", about)

    def posed(bone_name, end):
        below_the_arm = "upper_arm.L" in [bone.name for bone in metarig.data.bones[bone_name].parent_recursive]
        point = rest_point(metarig, bone_name, end)
        return move(point) if below_the_arm else point

    assert rig_preset_name(metarig) == "Rigify metarig"
    person = only_person(scene)
    for name, (bone, end) in {
        "neck": ("spine.004", "head"),
        "left_shoulder": ("upper_arm.L", "head"),
        "left_elbow": ("forearm.L", "head"),
        "left_wrist": ("hand.L", "head"),
        "right_wrist": ("hand.R", "head"),
        "left_knee": ("shin.L", "head"),
        "right_ankle": ("foot.R", "head"),
    }.items():
        assert_near(body_point(person, name), seen(posed(bone, end)))
    for name, (bone, end) in {
        "wrist": ("hand.L", "head"),
        "thumb_1": ("thumb.01.L", "head"),
        "thumb_4": ("thumb.03.L", "tail"),
        "index_1": ("f_index.01.L", "head"),
        "pinky_4": ("f_pinky.03.L", "tail"),
    }.items():
        assert_near(hand_point(person.left_hand, name), seen(posed(bone, end)))


FACE_CAMERA = (0.0, -1.0, 1.86)


def test_rigify_face_landmarks_and_pupils(empty_scene, rigify_blend):
    add_camera(empty_scene, location=FACE_CAMERA)
    metarig = rigify_rig(empty_scene, rigify_blend, "metarig")
    face = only_person(empty_scene).face
    assert len(face) == 70

    def at(bone, end="head"):
        return pinhole_pixel(rest_point(metarig, bone, end), FACE_CAMERA, WIDTH, HEIGHT)

    assert_near(face[30], at("nose.002"))  # nose tip
    assert_near(face[8], at("chin"))
    assert_near(face[36], at("lid.T.R"))  # right eye, outer corner
    assert_near(face[45], at("lid.T.L"))
    assert_near(face[48], at("lip.T.R.001", "tail"))  # mouth corner
    assert_near(face[68], at("eye.R", "tail"))  # pupils
    assert_near(face[69], at("eye.L", "tail"))
    assert face[60:68] == [None] * 8  # no inner-lip bones
    assert face[0][0] < face[8][0] < face[16][0]  # the jaw line runs from the subject's right
    assert face[37][1] < face[30][1] < face[51][1] < face[57][1] < face[8][1]  # eye, nose, lips, chin
    person = only_person(empty_scene)
    assert body_point(person, "nose") == face[30]
    assert body_point(person, "right_eye") == face[68]


def test_rigify_generated_rig_follows_its_deform_bones(scene, rigify_blend):
    rig = rigify_rig(scene, rigify_blend, "rig")
    assert rig_preset_name(rig) == "Rigify rig"
    person = only_person(scene)
    assert_near(body_point(person, "left_elbow"), seen(rest_point(rig, "DEF-forearm.L")))
    assert_near(body_point(person, "neck"), seen(rest_point(rig, "DEF-spine.004")))
    assert_near(body_point(person, "right_eye"), seen(rest_point(rig, "ORG-eye.R", "tail")))  # eyes have no DEF bone
    assert_near(hand_point(person.right_hand, "thumb_1"), seen(rest_point(rig, "DEF-thumb.01.R")))
    assert person.face is not None

    rig.pose.bones["upper_arm_parent.L"]["IK_FK"] = 1.0  # FK, through Rigify's drivers
    rig.pose.bones["upper_arm_fk.L"].rotation_mode = "XYZ"
    rig.pose.bones["upper_arm_fk.L"].rotation_euler.x = math.radians(-60)
    bpy.context.view_layer.update()
    posed = rig.evaluated_get(bpy.context.evaluated_depsgraph_get())
    elbow = posed.matrix_world @ posed.pose.bones["DEF-forearm.L"].head
    assert math.dist(seen(elbow), seen(rest_point(rig, "DEF-forearm.L"))) > 20
    assert_near(body_point(only_person(scene), "left_elbow"), seen(elbow))
