"""Applying a generated image: camera background and projected texture, in real headless Blender."""
import math

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from sd_blender import apply

RED, GREEN, BLUE, YELLOW = (1, 0, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1), (1, 1, 0, 1)


def write_png(path, width=32, height=18, quadrants=(RED, GREEN, BLUE, YELLOW)):
    """A PNG whose bottom-left, bottom-right, top-left, top-right quarters have the given colours."""
    pixels = np.empty((height, width, 4), dtype=np.float32)  # Blender rows run bottom to top
    bottom_left, bottom_right, top_left, top_right = quadrants
    pixels[: height // 2, : width // 2] = bottom_left
    pixels[: height // 2, width // 2 :] = bottom_right
    pixels[height // 2 :, : width // 2] = top_left
    pixels[height // 2 :, width // 2 :] = top_right
    scratch = bpy.data.images.new("scratch", width, height, alpha=True)
    scratch.pixels.foreach_set(pixels.ravel())
    scratch.filepath_raw = str(path)
    scratch.file_format = 'PNG'
    scratch.save()
    bpy.data.images.remove(scratch)
    return path


@pytest.fixture
def generated(tmp_path, empty_scene):
    return apply.load_image(write_png(tmp_path / "generated_0001.png"))


def add_camera(scene, orthographic=False, location=(0.3, -6.0, 2.0), rotation=(80, 0, 5)):
    camera_object = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera_object.location = location
    camera_object.rotation_euler = [math.radians(angle) for angle in rotation]
    if orthographic:
        camera_object.data.type = 'ORTHO'
        camera_object.data.ortho_scale = 4.0
    scene.collection.objects.link(camera_object)
    scene.camera = camera_object
    scene.render.resolution_x, scene.render.resolution_y = 64, 36
    bpy.context.view_layer.update()
    return camera_object


def add_mesh(scene, vertices, faces, name="Mesh"):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([tuple(v) for v in vertices], [], faces)
    mesh_object = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(mesh_object)
    bpy.context.view_layer.update()
    return mesh_object


def add_frame_filling_plane(scene, camera_object, distance=5.0):
    """A quad whose corners are the camera frame's corners at `distance` in front of the camera."""
    camera = camera_object.data
    corners = camera.view_frame(scene=scene)  # top right, bottom right, bottom left, top left
    if camera.type == 'PERSP':
        corners = [corner * (distance / -corner.z) for corner in corners]
    else:
        corners = [Vector((corner.x, corner.y, -distance)) for corner in corners]
    world_corners = [camera_object.matrix_world @ corner for corner in corners]
    return add_mesh(scene, world_corners, [(0, 1, 2, 3)], "Plane")


def add_cube(scene, location=(0.0, 0.0, 0.5)):
    vertices = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    cube = add_mesh(scene, vertices, faces, "Cube")
    cube.location = location
    cube.rotation_euler = (0.2, 0.1, 0.7)
    bpy.context.view_layer.update()
    return cube


def loop_uvs(mesh_object, uv_map_name):
    layer = mesh_object.data.uv_layers[uv_map_name]
    uvs = np.empty(len(mesh_object.data.loops) * 2, dtype=np.float32)
    layer.uv.foreach_get("vector", uvs)
    return uvs.reshape(-1, 2)


def uv_of_vertex(mesh_object, uv_map_name, vertex_index):
    uvs = loop_uvs(mesh_object, uv_map_name)
    loop = next(loop for loop in mesh_object.data.loops if loop.vertex_index == vertex_index)
    return uvs[loop.index]


def add_user_material(mesh_object):
    """A material the user made: a checker texture into a Principled BSDF's Base Color."""
    material = bpy.data.materials.new("User Material")
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True
    tree = material.node_tree
    checker = tree.nodes.new("ShaderNodeTexChecker")
    checker.name = "User Checker"
    principled = next(node for node in tree.nodes if node.type == 'BSDF_PRINCIPLED')
    tree.links.new(checker.outputs["Color"], principled.inputs["Base Color"])
    mesh_object.data.materials.append(material)
    return material


def base_color_source(material):
    principled = next(node for node in material.node_tree.nodes if node.type == 'BSDF_PRINCIPLED')
    return principled.inputs["Base Color"].links[0].from_node


# -------------------------------------------------------------------------------- load_image


def test_load_image_is_named_after_the_file(generated):
    assert generated.name == "generated_0001.png"
    assert (generated.size[0], generated.size[1]) == (32, 18)


def test_loading_the_same_file_again_reuses_the_datablock_with_the_new_pixels(tmp_path, generated):
    write_png(tmp_path / "generated_0001.png", quadrants=(BLUE, BLUE, BLUE, BLUE))
    again = apply.load_image(tmp_path / "generated_0001.png")
    assert again == generated
    assert len([image for image in bpy.data.images if image.name.startswith("generated_0001")]) == 1
    assert tuple(round(channel, 2) for channel in again.pixels[:4]) == BLUE


# ------------------------------------------------------------------------------- background


def test_background_shows_the_image_filling_the_camera_frame(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    apply.apply_as_background(camera_object, generated)
    camera = camera_object.data
    assert camera.show_background_images
    [background] = camera.background_images
    assert background.image == generated
    assert background.source == 'IMAGE'
    assert background.alpha == 1.0
    assert background.display_depth == 'BACK'
    assert background.frame_method == 'STRETCH'
    assert background.show_background_image


def test_background_reapplied_replaces_its_own_image_and_keeps_the_users(tmp_path, empty_scene, generated):
    camera_object = add_camera(empty_scene)
    user_reference = bpy.data.images.new("user reference", 8, 8)
    camera_object.data.background_images.new().image = user_reference
    apply.apply_as_background(camera_object, generated)
    second = apply.load_image(write_png(tmp_path / "generated_0002.png"))
    apply.apply_as_background(camera_object, second)
    shown = [background.image for background in camera_object.data.background_images]
    assert shown == [user_reference, second]


def test_background_needs_a_camera(empty_scene, generated):
    cube = add_cube(empty_scene)
    with pytest.raises(ValueError, match="camera"):
        apply.apply_as_background(cube, generated)


# ------------------------------------------------------------------------- projected texture


@pytest.mark.parametrize("orthographic", [False, True], ids=["perspective", "orthographic"])
def test_plane_filling_the_frame_maps_its_corners_to_the_image_corners(empty_scene, generated, orthographic):
    camera_object = add_camera(empty_scene, orthographic)
    plane = add_frame_filling_plane(empty_scene, camera_object)
    name = apply.apply_as_projected_texture(empty_scene, camera_object, plane, generated)
    assert name == "SD Projection"
    expected = {0: (1, 1), 1: (1, 0), 2: (0, 0), 3: (0, 1)}
    for vertex_index, corner in expected.items():
        assert uv_of_vertex(plane, name, vertex_index) == pytest.approx(corner, abs=1e-4)


@pytest.mark.parametrize("orthographic", [False, True], ids=["perspective", "orthographic"])
def test_a_vertex_on_the_camera_axis_lands_in_the_image_centre(empty_scene, generated, orthographic):
    camera_object = add_camera(empty_scene, orthographic)
    on_axis = camera_object.matrix_world @ Vector((0, 0, -4))
    vertices = [on_axis, on_axis + Vector((0, 0, 1)), on_axis + Vector((1, 0, 0))]
    triangle = add_mesh(empty_scene, vertices, [(0, 1, 2)])
    apply.apply_as_projected_texture(empty_scene, camera_object, triangle, generated)
    assert uv_of_vertex(triangle, "SD Projection", 0) == pytest.approx((0.5, 0.5), abs=1e-5)


@pytest.mark.parametrize(
    "orthographic, sensor_fit, shift, pixel_aspect, resolution",
    [
        (False, 'AUTO', (0.0, 0.0), (1, 1), (64, 36)),
        (False, 'VERTICAL', (0.2, -0.1), (2, 1), (40, 50)),
        (False, 'HORIZONTAL', (-0.3, 0.15), (1, 3), (36, 64)),
        (True, 'AUTO', (0.1, 0.25), (1, 2), (50, 40)),
    ],
)
def test_projection_matches_world_to_camera_view(
    empty_scene, generated, orthographic, sensor_fit, shift, pixel_aspect, resolution
):
    camera_object = add_camera(empty_scene, orthographic)
    camera = camera_object.data
    camera.sensor_fit = sensor_fit
    camera.shift_x, camera.shift_y = shift
    render = empty_scene.render
    render.pixel_aspect_x, render.pixel_aspect_y = pixel_aspect
    render.resolution_x, render.resolution_y = resolution
    cube = add_cube(empty_scene)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    for vertex in cube.data.vertices:
        expected = world_to_camera_view(empty_scene, camera_object, cube.matrix_world @ vertex.co)
        assert uv_of_vertex(cube, "SD Projection", vertex.index) == pytest.approx(expected[:2], abs=1e-4)


def test_the_users_uv_map_keeps_its_data_and_stays_active(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    user_map = cube.data.uv_layers.new(name="UVMap")
    user_uvs = np.random.default_rng(0).random(len(cube.data.loops) * 2).astype(np.float32)
    user_map.uv.foreach_set("vector", user_uvs)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    layers = cube.data.uv_layers
    assert [layer.name for layer in layers] == ["UVMap", "SD Projection"]
    assert layers.active.name == "UVMap"
    assert layers["UVMap"].active_render and not layers["SD Projection"].active_render
    np.testing.assert_array_equal(loop_uvs(cube, "UVMap").ravel(), user_uvs)


def test_a_second_apply_overwrites_the_projection_uvs_from_the_new_camera_position(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    camera_object.location.x += 1.0
    bpy.context.view_layer.update()
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    vertex = cube.data.vertices[0]
    expected = world_to_camera_view(empty_scene, camera_object, cube.matrix_world @ vertex.co)
    assert uv_of_vertex(cube, "SD Projection", 0) == pytest.approx(expected[:2], abs=1e-4)


def test_the_users_material_shows_the_image_and_keeps_all_its_nodes(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    material = add_user_material(cube)
    user_nodes = {node.name for node in material.node_tree.nodes}
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    nodes = material.node_tree.nodes
    assert user_nodes <= {node.name for node in nodes}
    assert cube.material_slots[0].material == material
    image_node = base_color_source(material)
    assert image_node.type == 'TEX_IMAGE' and image_node.image == generated
    assert nodes.active == image_node
    uv_node = image_node.inputs["Vector"].links[0].from_node
    assert uv_node.type == 'UVMAP' and uv_node.uv_map == "SD Projection"


def test_a_second_apply_reuses_its_nodes_and_shows_the_new_image(tmp_path, empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    material = add_user_material(cube)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    node_names = sorted(node.name for node in material.node_tree.nodes)
    second = apply.load_image(write_png(tmp_path / "generated_0002.png"))
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, second)
    assert sorted(node.name for node in material.node_tree.nodes) == node_names
    assert base_color_source(material).image == second
    assert len(bpy.data.materials) == 1


def test_an_object_without_material_gets_a_projection_material(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    [slot] = cube.material_slots
    assert slot.material.name == "SD Projection"
    assert base_color_source(slot.material).image == generated


def test_a_material_without_nodes_gets_them_switched_on_to_show_the_image(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    material = bpy.data.materials.new("Plain Colour")  # Blender 4.x: nodes off
    cube.data.materials.append(material)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    assert cube.material_slots[0].material == material
    assert base_color_source(material).image == generated


def test_projecting_onto_a_non_mesh_says_to_select_a_mesh(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    empty = bpy.data.objects.new("Empty", None)
    empty_scene.collection.objects.link(empty)
    with pytest.raises(ValueError, match="mesh"):
        apply.apply_as_projected_texture(empty_scene, camera_object, empty, generated)


def test_projecting_without_a_camera_says_to_set_one(empty_scene, generated):
    cube = add_cube(empty_scene)
    with pytest.raises(ValueError, match="camera"):
        apply.apply_as_projected_texture(empty_scene, None, cube, generated)


def test_rendered_plane_shows_the_image_the_right_way_up(tmp_path, empty_scene, generated):
    """Cycles renders the camera's view of the textured plane: each quarter keeps its colour."""
    camera_object = add_camera(empty_scene)
    plane = add_frame_filling_plane(empty_scene, camera_object)
    apply.apply_as_projected_texture(empty_scene, camera_object, plane, generated)
    empty_scene.world = bpy.data.worlds.new("World")
    render_path = render_cycles(empty_scene, tmp_path / "render.png")
    rendered = np.array(bpy.data.images.load(str(render_path)).pixels[:]).reshape(36, 64, 4)
    quarters = {
        "bottom left": rendered[4:14, 6:26],
        "bottom right": rendered[4:14, 38:58],
        "top left": rendered[22:32, 6:26],
        "top right": rendered[22:32, 38:58],
    }
    mean = {where: pixels[..., :3].mean(axis=(0, 1)) for where, pixels in quarters.items()}
    assert np.argmax(mean["bottom left"]) == 0
    assert np.argmax(mean["bottom right"]) == 1
    assert np.argmax(mean["top left"]) == 2
    red, green, blue = mean["top right"]
    assert min(red, green) > 2 * blue


def render_cycles(scene, path):
    scene.render.engine = 'CYCLES'
    scene.cycles.device = 'CPU'
    scene.cycles.samples = 4
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(path)
    scene.render.image_settings.file_format = 'PNG'
    bpy.ops.render.render(write_still=True)
    return path
