"""The color pass: the scene's own beauty render, at the asked size, as 8-bit RGB."""
import math
import os

import bpy
import numpy as np
import pytest

from scenes import add_camera, pixel_of, set_resolution
from sd_blender.scene.passes import render_control_images

WIDTH, HEIGHT = 64, 48


def add_glowing_plane(name, colour, location):
    bpy.ops.mesh.primitive_plane_add(size=3.0, location=location, rotation=(math.radians(90), 0.0, 0.0))
    plane = bpy.context.active_object
    plane.name = name
    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True
    emission = material.node_tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = colour + (1.0,)
    output = material.node_tree.nodes["Material Output"]
    material.node_tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    plane.data.materials.append(material)


@pytest.fixture
def scene(empty_scene):
    """Cycles, a red panel on the left and a blue one on the right, Standard view transform."""
    set_resolution(empty_scene, WIDTH, HEIGHT)
    add_camera(empty_scene)
    empty_scene.render.engine = "CYCLES"
    empty_scene.cycles.samples = 2
    empty_scene.view_settings.view_transform = "Standard"
    add_glowing_plane("Red", (0.8, 0.02, 0.02), (-1.5, 0.0, 0.0))
    add_glowing_plane("Blue", (0.02, 0.02, 0.8), (1.5, 0.0, 0.0))
    return empty_scene


def plain_render(scene, folder):
    scene.render.filepath = os.path.join(folder, "plain.png")
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(scene.render.filepath)
    pixels = np.empty(WIDTH * HEIGHT * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return np.round(pixels.reshape(HEIGHT, WIDTH, 4)[::-1, :, :3] * 255.0)


def test_the_colours_are_those_of_a_plain_render(scene, tmp_path):
    color = render_control_images(scene, ["color"], WIDTH, HEIGHT)["color"]
    assert color.shape == (HEIGHT, WIDTH, 3) and color.dtype == np.uint8
    assert np.abs(color - plain_render(scene, str(tmp_path))).mean() < 3.0
    red, blue = color[pixel_of(scene, (-1.5, 0.0, 0.0))], color[pixel_of(scene, (1.5, 0.0, 0.0))]
    assert red[0] > 200 and red[1:].max() < 60
    assert blue[2] > 200 and blue[:2].max() < 60


def test_rendered_at_the_asked_size_and_the_users_settings_come_back(scene):
    set_resolution(scene, 1920, 1080)
    scene.render.resolution_percentage = 50
    scene.render.filepath = "//user_output/"
    scene.render.image_settings.file_format = "JPEG"
    color = render_control_images(scene, ["color"], WIDTH, HEIGHT)["color"]
    assert color.shape == (HEIGHT, WIDTH, 3)
    render = scene.render
    assert (render.resolution_x, render.resolution_y, render.resolution_percentage) == (1920, 1080, 50)
    assert scene.render.filepath == "//user_output/" and scene.render.image_settings.file_format == "JPEG"
    assert scene.render.engine == "CYCLES" and scene.cycles.samples == 2


def test_the_scenes_own_engine_renders_it(scene):
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light, scene.display.shading.color_type = "FLAT", "MATERIAL"
    for material in bpy.data.materials:
        material.diffuse_color = (0.0, 0.8, 0.0, 1.0)  # what Workbench shows: green, not the emission
    color = render_control_images(scene, ["color"], WIDTH, HEIGHT)["color"]
    left = color[pixel_of(scene, (-1.5, 0.0, 0.0))]
    assert left[1] > 150 and left[0] < 60
    assert scene.render.engine == "BLENDER_WORKBENCH"
