"""`sd_blender bake`: images seen from cameras fused and baked into a UV texture, in real Blender.

The round trip: a cube whose material shows a known image through its UVs (as emission, so a
render's colours do not depend on light) is rendered from six cameras; the renders given to
`bake` must give back the known image. The renders use a pixel filter narrower than a pixel, so
each pixel holds the colour at its centre and the test measures the geometry, not the filter.
"""
import json
import math

import bpy
import numpy as np
import pytest
from mathutils import Vector
from PIL import Image

from sd_blender.core import fusion
from sd_blender.scene.texels import BAKE_UV_NAME, world_mesh
from sd_blender.ui import cli

VIEW_SIZE = 192
TEXTURE_SIZE = 512
AXES = {"Front": (0, -1, 0), "Back": (0, 1, 0), "Left": (-1, 0, 0), "Right": (1, 0, 0), "Top": (0, 0, 1), "Bottom": (0, 0, -1)}


def known_texture(size=TEXTURE_SIZE):
    """A smooth colour field over the UV square, 8-bit RGB, top row first."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    u, v = x / size, 1 - y / size
    rgb = np.stack([
        0.5 + 0.4 * np.sin(2 * np.pi * 2 * u),
        0.5 + 0.4 * np.cos(2 * np.pi * 3 * v),
        0.5 + 0.3 * np.sin(2 * np.pi * (u + v)),
    ], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def emission_material(name, image, uv_name):
    """Shows `image` through the UV map `uv_name` as emission (a Principled BSDF, black base)."""
    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True
    tree = material.node_tree
    principled = tree.nodes["Principled BSDF"]
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image = image
    uv_map = tree.nodes.new("ShaderNodeUVMap")
    uv_map.uv_map = uv_name
    tree.links.new(uv_map.outputs["UV"], texture.inputs["Vector"])
    tree.links.new(texture.outputs["Color"], principled.inputs["Emission Color"])
    principled.inputs["Emission Strength"].default_value = 1.0
    principled.inputs["Base Color"].default_value = (0, 0, 0, 1)
    return material


def look_from(scene, name, direction, distance=7.0):
    data = bpy.data.cameras.new(name)
    data.angle = math.radians(30)
    camera = bpy.data.objects.new(name, data)
    scene.collection.objects.link(camera)
    camera.location = Vector(direction).normalized() * distance
    camera.rotation_mode = "QUATERNION"
    camera.rotation_quaternion = (-Vector(direction)).to_track_quat("-Z", "Y")
    return camera


def exact_render_settings(scene, size):
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.cycles.filter_width = 0.01
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.world = bpy.data.worlds.new("Black")
    scene.world.color = (0, 0, 0)


def render(scene, camera, path):
    scene.camera = camera
    scene.render.filepath = str(path)
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    bpy.ops.render.render(write_still=True)
    return np.asarray(Image.open(path).convert("RGB"))


def psnr(a, b, mask):
    error = (a.astype(np.float64) - b.astype(np.float64))[mask]
    return 10 * math.log10(255.0 ** 2 / max(float((error ** 2).mean()), 1e-12))


@pytest.fixture
def textured_cube(empty_scene, tmp_path):
    """A 2-unit cube showing the known texture through its own UVs, six axis cameras and a
    seventh from an angle none of them has."""
    scene = empty_scene
    exact_render_settings(scene, VIEW_SIZE)
    path = tmp_path / "known.png"
    Image.fromarray(known_texture()).save(path)
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    cube = bpy.context.active_object
    cube.name = "Cube"
    cube.data.materials.append(emission_material("Known", bpy.data.images.load(str(path)), "UVMap"))
    cameras = [look_from(scene, name, direction) for name, direction in AXES.items()]
    fresh = look_from(scene, "Fresh", (0.6, -0.8, 0.55))
    return scene, cube, cameras, fresh


def test_a_cube_seen_from_six_cameras_bakes_back_into_its_known_texture(textured_cube, tmp_path):
    scene, cube, cameras, fresh = textured_cube
    images = []
    for camera in cameras:
        render(scene, camera, tmp_path / f"{camera.name}.png")
        images.append(str(tmp_path / f"{camera.name}.png"))
    original_view = render(scene, fresh, tmp_path / "fresh_original.png")
    out = tmp_path / "baked" / "cube.png"

    assert cli.run([
        "bake", "--objects", "Cube", "--cameras", ",".join(camera.name for camera in cameras),
        "--images", ",".join(images), "--texture-size", str(TEXTURE_SIZE), "--out", str(out),
    ]) == 0

    baked = np.asarray(Image.open(out).convert("RGB"))
    assert baked.shape == (TEXTURE_SIZE, TEXTURE_SIZE, 3)
    mesh = world_mesh(cube, bpy.context.evaluated_depsgraph_get(), "UVMap")
    covered = fusion.texel_surface(mesh, TEXTURE_SIZE)
    island_mask = covered.image(np.ones(len(covered.texels), np.float32)) > 0
    assert psnr(baked, known_texture(), island_mask) >= 30.0
    assert (baked[~island_mask] > 0).any(axis=-1).all(), "texels outside the islands are filled, never black"

    report = json.loads((tmp_path / "baked" / "cube_report.json").read_text())
    entry = report["objects"]["Cube"]
    assert entry["coverage"] == pytest.approx(1.0, abs=1e-3)
    assert entry["uv_map"] == "UVMap" and entry["texture_size"] == TEXTURE_SIZE
    assert len(entry["view_agreement"]["per_view"]) == 6 and entry["view_agreement"]["mean"] < 3.0
    assert report["views"] == [camera.name for camera in cameras]
    assert report["fusion"] == {"exponent": 3.0, "discard_angle": 75.0}
    assert report["seconds"]["blender"] > 0

    cube.data.materials[0] = emission_material("Baked", bpy.data.images.load(str(out)), "UVMap")
    baked_view = render(scene, fresh, tmp_path / "fresh_baked.png")
    on_cube = original_view.max(axis=-1) > 0
    assert psnr(baked_view, original_view, on_cube) >= 30.0
    assert np.abs(baked_view.astype(int) - original_view.astype(int))[on_cube].max() <= 8, "no seam shows"


def uv_state(mesh):
    """Everything of the user's UV maps: names in order, active flags, coordinates."""
    coordinates = {}
    for layer in mesh.uv_layers:
        values = np.empty(len(mesh.loops) * 2, np.float32)
        layer.uv.foreach_get("vector", values)
        coordinates[layer.name] = values
    return [layer.name for layer in mesh.uv_layers], mesh.uv_layers.active.name, \
        [layer.active_render for layer in mesh.uv_layers], coordinates


def test_a_map_with_overlapping_islands_is_left_alone_and_sd_bake_made(textured_cube, tmp_path):
    scene, cube, cameras, _ = textured_cube
    mesh = cube.data
    extra = mesh.uv_layers.new(name="Stacked")  # every face on the whole square: islands overlap
    uvs = np.tile([[0, 0], [1, 0], [1, 1], [0, 1]], (len(mesh.polygons), 1)).astype(np.float32)
    extra.uv.foreach_set("vector", uvs.ravel())
    mesh.uv_layers.active = extra
    mesh.polygons.foreach_set("select", [index % 2 == 0 for index in range(len(mesh.polygons))])
    selection = [polygon.select for polygon in mesh.polygons]
    tree = cube.data.materials[0].node_tree
    links_before = sorted((link.from_node.name, link.from_socket.name, link.to_node.name, link.to_socket.name)
                          for link in tree.links)
    before = uv_state(mesh)
    images = []
    for camera in cameras[:2]:
        render(scene, camera, tmp_path / f"{camera.name}.png")
        images.append(str(tmp_path / f"{camera.name}.png"))

    assert cli.run(["bake", "--objects", "Cube", "--cameras", "Front,Top", "--images", ",".join(images),
                    "--texture-size", "512", "--out", str(tmp_path / "t.png")]) == 0

    names, active, render_flags, coordinates = uv_state(mesh)
    assert names == before[0] + [BAKE_UV_NAME]
    assert active == "Stacked" and render_flags[:-1] == before[2] and not render_flags[-1]
    for name, values in before[3].items():
        assert np.array_equal(coordinates[name], values), f"UV map {name} changed"
    assert fusion.usable_for_baking(world_mesh(cube, bpy.context.evaluated_depsgraph_get(), BAKE_UV_NAME)) is None
    assert [polygon.select for polygon in mesh.polygons] == selection
    report = json.loads((tmp_path / "t_report.json").read_text())
    assert report["objects"]["Cube"]["uv_map"] == BAKE_UV_NAME
    links_after = {(link.from_node.name, link.from_socket.name, link.to_node.name, link.to_socket.name)
                   for link in tree.links}
    kept = [link for link in links_before if link[3] != "Base Color"]
    assert set(kept) <= links_after, "the user's links stay"
    texture_node = tree.nodes["SD Texture Image"]
    assert texture_node.image.filepath and tree.nodes["SD Texture UV Map"].uv_map == BAKE_UV_NAME
    mix = tree.nodes["SD Texture Mix"]
    assert any(link.to_node == tree.nodes["Principled BSDF"] and link.to_socket.name == "Base Color"
               and link.from_node == mix for link in tree.links)


@pytest.mark.parametrize("arguments, message", [
    (["--objects", "Nope", "--cameras", "Front", "--images", "a.png"], "there is no object named 'Nope'"),
    (["--objects", "Cube", "--cameras", "Nope", "--images", "a.png"], "there is no camera object named 'Nope'"),
    (["--objects", "Cube", "--cameras", "Front,Top", "--images", "a.png"], "one image per camera, got 1 image(s) for 2"),
    (["--objects", "Cube", "--cameras", "Front", "--images", "a.png", "--uv", "Nope"], "has no UV map 'Nope'"),
    (["--objects", "Front", "--cameras", "Front", "--images", "a.png"], "Select a mesh object to texture; got 'Front' (CAMERA)"),
])
def test_bake_says_what_to_fix(textured_cube, tmp_path, capsys, arguments, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    arguments = [str(tmp_path / argument) if argument == "a.png" else argument for argument in arguments]
    assert cli.run(["bake", *arguments, "--texture-size", "512", "--out", str(tmp_path / "t.png")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()


def test_a_narrow_discard_angle_leaves_oblique_views_out(textured_cube, tmp_path, capsys):
    scene, cube, cameras, _ = textured_cube
    oblique = look_from(scene, "Oblique", (1.0, -1.0, 0.0))  # 45° from the front and the right face
    render(scene, oblique, tmp_path / "oblique.png")
    arguments = ["bake", "--objects", "Cube", "--cameras", "Oblique", "--images", str(tmp_path / "oblique.png"),
                 "--texture-size", "512", "--out", str(tmp_path / "t.png")]
    assert cli.run([*arguments, "--discard-angle", "60"]) == 0
    assert json.loads((tmp_path / "t_report.json").read_text())["objects"]["Cube"]["coverage"] > 0.3
    assert cli.run([*arguments, "--discard-angle", "40", "--exponent", "1"]) == 0
    report = json.loads((tmp_path / "t_report.json").read_text())
    assert report["objects"]["Cube"]["coverage"] == 0.0 and report["fusion"]["discard_angle"] == 40.0
    with pytest.raises(SystemExit) as exit_info:
        cli.run([*arguments, "--discard-angle", "100"])
    assert exit_info.value.code == 2
    assert "--discard-angle must be above 0 and at most 90 degrees, got 100.0" in capsys.readouterr().err
