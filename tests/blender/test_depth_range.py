"""Depth range modes: auto per frame, fixed, and one range over a shot (no flicker)."""
import bpy
import pytest
from PIL import Image

import sd_blender
from scenes import sphere_and_wall_scene
from sd_blender.core.depth import HIT_FLOOR
from sd_blender.scene.depth_range import depth_range, measure_shot_range, shot_needs_measuring
from sd_blender.scene.request import pass_options
from sd_blender.scene.passes import PassError, render_control_images

SPHERE, WALL = (64, 64), (64, 110)


@pytest.fixture
def scene(empty_scene):
    sd_blender.register()
    scene = sphere_and_wall_scene(empty_scene)
    sphere = bpy.data.objects["Sphere"]
    for frame, y in ((1, 0.0), (2, -4.0), (3, 0.0)):  # frame 2: the sphere comes 4 units closer
        sphere.location.y = y
        sphere.keyframe_insert("location", frame=frame)
    scene.frame_start, scene.frame_end = 1, 3
    scene.frame_set(1)
    yield scene
    sd_blender.unregister()


def depth_at(scene, frame, pixel):
    scene.frame_set(frame)
    options = pass_options(scene, ["depth"])
    return int(render_control_images(scene, ["depth"], 128, 128, options)["depth"][pixel])


def test_auto_range_rescales_each_frame(scene):
    assert depth_at(scene, 1, WALL) != depth_at(scene, 2, WALL)  # the flicker the shot mode removes


def test_reading_the_options_of_an_unmeasured_shot_measures_nothing_and_says_what_to_do(scene):
    scene.sd_blender.depth_range_mode = "SHOT"
    assert shot_needs_measuring(scene)
    with pytest.raises(PassError, match=r"the Shot depth range is not measured over frames 1-3: press Measure Shot"):
        pass_options(scene, ["depth"])
    assert scene.sd_blender.depth_shot_frames == ""  # nothing written
    assert pass_options(scene, ["normal"]).depth_range is None  # only the depth pass needs the range


def test_a_shot_keeps_the_wall_at_one_brightness(scene):
    scene.sd_blender.depth_range_mode = "SHOT"
    measure_shot_range(scene, 128, 128)
    assert not shot_needs_measuring(scene)
    assert depth_at(scene, 1, WALL) == depth_at(scene, 2, WALL) == depth_at(scene, 3, WALL)
    settings = scene.sd_blender
    assert settings.depth_shot_frames == "1-3"
    assert settings.depth_shot_near == pytest.approx(5.0, abs=0.3)  # sphere front at frame 2: 10 - 4 - 1
    assert 18.0 <= settings.depth_shot_far < 20.0  # the wall's front; a quarter-size pixel may see its side
    assert depth_at(scene, 2, SPHERE) == 255 and depth_at(scene, 1, SPHERE) < 255


def test_measuring_a_shot_puts_the_current_frame_back(scene):
    scene.frame_set(2)
    near, far = measure_shot_range(scene, 128, 128)
    assert scene.frame_current == 2 and near < far


def test_fixed_range_maps_near_to_white_and_far_to_the_floor(scene):
    settings = scene.sd_blender
    settings.depth_range_mode = "FIXED"
    settings.depth_near, settings.depth_far = 9.0, 18.0
    assert depth_at(scene, 1, SPHERE) == 255
    assert depth_at(scene, 1, WALL) == round(HIT_FLOOR * 255)
    settings.depth_near = 20.0
    with pytest.raises(PassError, match=r"Near \(20\) must be less than Far \(18\)"):
        depth_range(scene)


def test_a_shot_that_sees_nothing_says_so(scene):
    for obj in list(bpy.data.objects):
        if obj.type == "MESH":
            bpy.data.objects.remove(obj)
    with pytest.raises(PassError, match="the camera sees no surface in frames 1-3"):
        measure_shot_range(scene, 128, 128)


def test_preview_passes_measures_an_unmeasured_shot_first(scene):
    scene.sd_blender.depth_range_mode = "SHOT"
    scene.sd_blender.control_units.add().kind = "depth"
    assert bpy.ops.sd_blender.preview_passes() == {"FINISHED"}
    assert scene.sd_blender.depth_shot_frames == "1-3"


def test_the_command_line_measures_the_shot_as_its_first_step(scene, tmp_path, capsys):
    from sd_blender.ui import cli

    out = tmp_path / "passes"
    arguments = ["passes", "--kinds", "depth", "--depth-range", "shot", "--frames", "1-3", "--out", str(out)]
    assert cli.run(arguments) == 0
    assert "measured over frames 1-3" in capsys.readouterr().out
    walls = {int(Image.open(out / f"depth_000{frame}.png").getpixel(WALL[::-1])) for frame in (1, 2, 3)}
    assert len(walls) == 1  # one range over the shot: the wall keeps its brightness
    assert cli.run(arguments) == 0
    assert "measured" not in capsys.readouterr().out  # measured once, for this frame range
