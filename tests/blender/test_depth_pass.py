"""The depth pass of known scenes, probed at known pixels (rows from the top)."""
import bpy
import numpy as np
import pytest

from scenes import add_camera, set_resolution, sphere_and_wall_scene
from sd_blender.core.pass_options import PassOptions
from sd_blender.scene.passes import PassError, render_control_images, render_pass_buffers, show_in_blender

CENTRE, WALL, EMPTY_CORNER = (64, 64), (64, 110), (5, 5)


@pytest.fixture
def scene(empty_scene):
    return sphere_and_wall_scene(empty_scene)


def test_distances_are_exact_camera_depth(scene):
    distance = render_pass_buffers(scene, ["depth"], 128, 128)["depth"]
    assert distance[CENTRE] == pytest.approx(9.0, abs=0.02)  # sphere front, 10 - 1
    assert distance[WALL] == pytest.approx(18.0, abs=1e-3)  # wall front face, 10 + 8
    assert distance[64, 100] == pytest.approx(18.0, abs=1e-3)  # planar depth: the same across the face


def test_near_is_white_far_is_darker_background_is_black(scene):
    depth = render_control_images(scene, ["depth"], 128, 128)["depth"]
    assert depth.shape == (128, 128) and depth.dtype == np.uint8
    assert depth[CENTRE] == 255
    assert 20 < depth[WALL] < 128
    assert depth[EMPTY_CORNER] == 0


def test_settings_that_would_scale_clamp_blur_or_hide_values_leave_depth_exact(scene):
    bpy.data.objects["Wall"].is_shadow_catcher = True
    scene.cycles.film_exposure = 2.0
    scene.cycles.sample_clamp_direct = 5.0
    scene.render.use_motion_blur = True
    scene.camera.data.dof.use_dof = True
    scene.camera.data.dof.focus_distance, scene.camera.data.dof.aperture_fstop = 1.0, 0.1
    distance = render_pass_buffers(scene, ["depth"], 128, 128)["depth"]
    assert distance[CENTRE] == pytest.approx(9.0, abs=0.02)
    assert distance[WALL] == pytest.approx(18.0, abs=1e-3)
    assert (scene.cycles.film_exposure, scene.cycles.sample_clamp_direct) == (2.0, 5.0)
    assert scene.render.use_motion_blur and scene.camera.data.dof.use_dof and bpy.data.objects["Wall"].is_shadow_catcher


def test_a_fixed_depth_range_option_is_used(scene):
    depth = render_control_images(scene, ["depth"], 128, 128, PassOptions(depth_range=(4.5, 18.0)))["depth"]
    assert depth[CENTRE] == 102  # a third of the way from far to near in inverse depth: 0.1 + 0.9 / 3


def count_renders():
    renders = []
    bpy.app.handlers.render_init.append(lambda *args: renders.append(args))
    return renders


def test_all_geometry_passes_come_from_one_render_and_color_from_one_more(scene):
    renders = count_renders()
    try:
        images = render_control_images(scene, ["seg", "depth", "normal", "lineart", "canny"], 64, 64)
        assert len(renders) == 1
        assert list(images) == ["seg", "depth", "normal", "lineart", "canny"]
        scene.render.engine, scene.cycles.samples = "CYCLES", 1
        render_control_images(scene, ["depth", "color"], 64, 64)
        assert len(renders) == 3
    finally:
        bpy.app.handlers.render_init.clear()


def test_an_unknown_pass_lists_the_available_ones(scene):
    with pytest.raises(PassError, match="unknown pass height; available: depth, normal, openpose"):
        render_control_images(scene, ["depth", "height"], 64, 64)


def test_the_users_render_settings_come_back(scene):
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.image_settings.file_format = "JPEG"
    scene.render.filepath = "//user_output/"
    set_resolution(scene, 1920, 1080)
    scene.view_layers[0].use_pass_z = False
    scene.render.use_freestyle = True
    scene.render.film_transparent = False
    render_control_images(scene, ["depth", "normal", "seg"], 128, 128)
    assert scene.render.engine == "BLENDER_WORKBENCH"
    assert scene.render.image_settings.file_format == "JPEG"
    assert scene.render.filepath == "//user_output/"
    assert (scene.render.resolution_x, scene.render.resolution_y) == (1920, 1080)
    assert scene.view_layers[0].use_pass_z is False
    assert scene.render.use_freestyle and not scene.render.film_transparent
    assert scene.view_layers[0].material_override is None and scene.view_layers[0].use_volumes


def test_rendered_at_the_asked_size_with_a_non_square_frame(scene):
    depth = render_control_images(scene, ["depth"], 192, 128)["depth"]
    assert depth.shape == (128, 192)
    assert depth[64, 96] == 255


def test_orthographic_camera(empty_scene):
    set_resolution(empty_scene, 64, 64)
    add_camera(empty_scene, orthographic_scale=4.0)
    bpy.ops.mesh.primitive_plane_add(size=1.0, location=(0.0, 0.0, 0.0), rotation=(np.pi / 2, 0.0, 0.0))
    distance = render_pass_buffers(empty_scene, ["depth"], 64, 64)["depth"]
    assert distance[32, 32] == pytest.approx(10.0, abs=1e-3)
    assert distance[2, 2] > 1e9


def test_a_scene_without_camera_says_what_to_fix(empty_scene):
    bpy.ops.mesh.primitive_cube_add()
    with pytest.raises(PassError, match="no active camera"):
        render_control_images(empty_scene, ["depth"], 64, 64)


def test_preview_image_holds_the_pass(scene):
    depth = render_control_images(scene, ["depth"], 128, 128)["depth"]
    image = show_in_blender("depth", depth)
    assert image.name == "SD depth" and tuple(image.size) == (128, 128)
    pixels = np.empty(128 * 128 * 4, np.float32)
    image.pixels.foreach_get(pixels)
    rows_bottom_up = pixels.reshape(128, 128, 4)
    assert rows_bottom_up[127 - CENTRE[0], CENTRE[1], 0] == pytest.approx(1.0)
    assert rows_bottom_up[127 - EMPTY_CORNER[0], EMPTY_CORNER[1], 0] == 0.0
