"""The motion pass against the motion each surface really had (from the objects' and bones'
transforms, motion_scenes.true_motion), and against the colour render: frame N−1 warped by the
motion of frame N is frame N wherever the mask says the surface was seen."""
import subprocess
import sys

import bpy
import numpy as np
import pytest

from conftest import REPO_ROOT
from motion_scenes import HEIGHT, WIDTH, motion_shot, true_motion
from sd_blender.core.png import read_png
from sd_blender.core.warp import read_motion, warping_error
from sd_blender.scene.motion import render_motion
from sd_blender.scene.passes import render_beauty, render_geometry

MEDIAN_ERROR = 0.25  # pixels: the bound for "exact"


def errors_on(result, truth, names, name):
    """Distances between the pass and the true motion on `name`'s pixels the pass says were seen."""
    pixels = (names == name) & ~result.occluded & np.isfinite(truth[..., 0])
    return np.linalg.norm(result.motion[pixels] - truth[pixels], axis=1), pixels


@pytest.fixture
def shot(empty_scene):
    return motion_shot(empty_scene)


def test_the_motion_of_a_panning_camera_a_moving_cube_and_a_bent_column_is_exact(shot):
    result = render_motion(shot, WIDTH, HEIGHT)
    truth, names = true_motion(shot)
    for name, smallest_motion in (("Wall", 1.0), ("Cube", 2.0), ("Column", 2.0)):
        errors, pixels = errors_on(result, truth, names, name)
        assert pixels.sum() > 300, name
        assert np.median(errors) <= MEDIAN_ERROR, (name, np.median(errors))
        # The motion is large enough that a half-pixel offset or swapped X and Y would fail.
        assert np.median(np.abs(truth[pixels][:, 0] - truth[pixels][:, 1])) > smallest_motion, name


def test_objects_hidden_in_the_viewport_but_rendered_move_all_the_same(shot):
    truth, names = true_motion(shot)
    shot.objects["Cube"].hide_set(True)
    shot.objects["Column"].hide_viewport = True
    result = render_motion(shot, WIDTH, HEIGHT)
    for name in ("Cube", "Column"):
        errors, pixels = errors_on(result, truth, names, name)
        assert pixels.sum() > 300 and np.median(errors) <= MEDIAN_ERROR, name
    assert shot.objects["Cube"].hide_get() and shot.objects["Column"].hide_viewport  # as the user left them


def test_the_column_without_its_deformation_would_be_far_off(shot):
    result = render_motion(shot, WIDTH, HEIGHT)
    truth, names = true_motion(shot)
    shot.objects["Column"].modifiers["Armature"].show_viewport = False
    _, pixels = errors_on(result, truth, names, "Column")
    undeformed = render_motion(shot, WIDTH, HEIGHT)
    upper = pixels & (truth[..., 0] - truth[..., 0][pixels].mean() > 0)
    assert np.median(np.linalg.norm(undeformed.motion[upper] - truth[upper], axis=1)) > 1.0


def test_frame_n_minus_one_warped_by_the_motion_is_frame_n(shot):
    result = render_motion(shot, WIDTH, HEIGHT)
    shot.frame_set(1)
    previous = render_beauty(shot, WIDTH, HEIGHT)
    shot.frame_set(2)
    current = render_beauty(shot, WIDTH, HEIGHT)
    error, compared = warping_error(current, previous, result.motion, result.occluded)
    assert compared > 0.6
    assert error <= 2.0, error
    # Against no motion at all the same frames differ far more: the test can tell.
    still, _ = warping_error(current, previous, np.zeros_like(result.motion), result.occluded)
    assert still > 4 * error


def test_the_occlusion_mask_covers_what_frame_n_minus_one_did_not_show(shot):
    result = render_motion(shot, WIDTH, HEIGHT)
    truth, names = true_motion(shot)
    assert result.occluded[names == ""].all()  # nothing hit
    rows, columns = np.nonzero(np.isfinite(truth[..., 0]))
    x, y = columns + truth[rows, columns, 0], rows + truth[rows, columns, 1]
    outside = (x < -0.5) | (x > WIDTH - 0.5) | (y < -0.5) | (y > HEIGHT - 0.5)
    assert outside.sum() > 20  # the camera panned: a band of the wall was outside frame N−1
    assert result.occluded[rows[outside], columns[outside]].all()
    # Wall pixels whose point was behind the cube in frame N−1 (frame N−1's render saw the cube there).
    shot.frame_set(1)
    before = render_geometry(shot, WIDTH, HEIGHT)
    shot.frame_set(2)
    inside = ~outside
    seen_then = [before.surfaces[before.surface_ids[int(round(y_)), int(round(x_))]]
                 if before.surface_ids[int(round(y_)), int(round(x_))] >= 0 else None
                 for x_, y_ in zip(np.clip(x[inside], 0, WIDTH - 1), np.clip(y[inside], 0, HEIGHT - 1))]
    wall = names[rows[inside], columns[inside]] == "Wall"
    hidden = wall & np.array([surface is not None and surface.object.name == "Cube" for surface in seen_then])
    assert hidden.sum() > 20
    assert result.occluded[rows[inside][hidden], columns[inside][hidden]].mean() >= 0.95


@pytest.mark.parametrize("what", ["camera", "rotating object"])
def test_camera_motion_alone_and_a_rotating_object_alone_are_exact(empty_scene, what):
    camera_only = what == "camera"  # else the cube turns where it stands
    scene = motion_shot(empty_scene, pan=camera_only, dolly=camera_only, move=False, turn=not camera_only,
                        column=False)
    result = render_motion(scene, WIDTH, HEIGHT)
    truth, names = true_motion(scene)
    for name in ("Wall", "Cube"):
        errors, pixels = errors_on(result, truth, names, name)
        assert pixels.sum() > 300
        assert np.median(errors) <= MEDIAN_ERROR, (name, np.median(errors))
    moving = "Wall" if camera_only else "Cube"
    _, pixels = errors_on(result, truth, names, moving)
    assert np.median(np.linalg.norm(truth[pixels], axis=1)) > 1.0


def test_the_command_line_writes_the_motion_exr_and_the_occlusion_png(shot, tmp_path):
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    out = tmp_path / "passes"
    completed = subprocess.run(
        [sys.executable, "-m", "sd_blender", "passes", str(tmp_path / "shot.blend"), "--kinds", "depth,motion",
         "--frames", "2-2", "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert str(out / "motion_0002.exr") in completed.stdout.splitlines()
    assert sorted(path.name for path in out.iterdir()) == ["depth_0002.png", "motion_0002.exr", "occlusion_0002.png"]
    expected = render_motion(shot, WIDTH, HEIGHT)
    assert np.array_equal(read_motion(out / "motion_0002.exr"), expected.motion)
    occlusion = read_png(out / "occlusion_0002.png")
    assert occlusion.shape == (HEIGHT, WIDTH) and set(np.unique(occlusion)) == {0, 255}
    assert np.array_equal(occlusion == 255, expected.occluded)
