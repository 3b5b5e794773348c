"""Applying a generated image: camera background and projected texture, in real headless Blender."""
import math

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from sd_blender.scene import apply

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


def mix_input(mix, name):
    return next(socket for socket in mix.inputs if socket.name == name and socket.type == 'RGBA')


def projected_image_node(material):
    """The image node feeding the projection's mix into the Base Color."""
    mix = base_color_source(material)
    assert mix.name == "SD Projection Mix"
    return mix_input(mix, "B").links[0].from_node


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
    apply.apply_as_projected_texture(empty_scene, camera_object, plane, generated)
    expected = {0: (1, 1), 1: (1, 0), 2: (0, 0), 3: (0, 1)}
    for vertex_index, corner in expected.items():
        assert uv_of_vertex(plane, "SD Projection", vertex_index) == pytest.approx(corner, abs=1e-4)


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
    image_node = projected_image_node(material)
    assert image_node.type == 'TEX_IMAGE' and image_node.image == generated
    assert nodes.active == image_node
    assert image_node.inputs["Vector"].links[0].from_node.name == "SD Projection Frame"
    # Where the camera did not see the surface, the user's own colour (the checker) shows.
    assert mix_input(base_color_source(material), "A").links[0].from_node.name == "User Checker"


def test_a_second_apply_reuses_its_nodes_and_shows_the_new_image(tmp_path, empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    material = add_user_material(cube)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    node_names = sorted(node.name for node in material.node_tree.nodes)
    second = apply.load_image(write_png(tmp_path / "generated_0002.png"))
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, second)
    assert sorted(node.name for node in material.node_tree.nodes) == node_names
    assert projected_image_node(material).image == second
    assert mix_input(base_color_source(material), "A").links[0].from_node.name == "User Checker"
    assert len(bpy.data.materials) == 1


def test_an_object_without_material_gets_a_projection_material(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    [slot] = cube.material_slots
    assert slot.material.name == "SD Projection"
    assert projected_image_node(slot.material).image == generated


def test_a_material_without_nodes_gets_them_switched_on_to_show_the_image(empty_scene, generated):
    camera_object = add_camera(empty_scene)
    cube = add_cube(empty_scene)
    material = bpy.data.materials.new("Plain Colour")  # Blender 4.x: nodes off
    cube.data.materials.append(material)
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    assert cube.material_slots[0].material == material
    assert projected_image_node(material).image == generated


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


# ------------------------------------------------------------- what the camera did not see

GREY = (0.8, 0.8, 0.8)  # the Base Color of the material the projection adds to an object without one


def rendered_surfaces(scene, tmp_path, name):
    """Cycles' view of the scene: (colours, covered), bottom row first; covered where a surface is."""
    scene.world = scene.world or bpy.data.worlds.new("World")
    scene.render.film_transparent = True
    scene.render.image_settings.color_mode = 'RGBA'
    path = render_cycles(scene, tmp_path / f"{name}.png")
    width, height = scene.render.resolution_x, scene.render.resolution_y
    pixels = np.array(bpy.data.images.load(str(path)).pixels[:]).reshape(height, width, 4)
    return pixels[..., :3], pixels[..., 3] > 0.99


def is_grey(pixel):
    return float(np.ptp(pixel)) < 0.1 * float(np.mean(pixel)) + 0.02


def point_on_plane(plane, u, v):
    """The world point at frame coordinates (u, v) of a frame-filling plane (vertices: top right,
    bottom right, bottom left, top left)."""
    top_right, bottom_right, bottom_left, top_left = (plane.matrix_world @ vertex.co for vertex in plane.data.vertices)
    bottom = bottom_left.lerp(bottom_right, u)
    return bottom.lerp(top_left.lerp(top_right, u), v)


def pixel_at(pixels, u, v):
    height, width = pixels.shape[:2]
    return pixels[int(v * height), int(u * width)]


def test_a_surface_hidden_behind_another_keeps_its_own_colour(tmp_path, empty_scene, generated):
    camera_object = add_camera(empty_scene)
    plane = add_frame_filling_plane(empty_scene, camera_object)
    # A small cube halfway along the line of sight to the middle of the image's red quarter.
    eye = camera_object.matrix_world.translation
    hidden = point_on_plane(plane, 0.25, 0.25)
    blocker = add_cube(empty_scene, location=eye.lerp(hidden, 0.5))
    blocker.scale = (0.15, 0.15, 0.15)
    bpy.context.view_layer.update()
    apply.apply_as_projected_texture(empty_scene, camera_object, plane, generated)
    blocker.hide_render = True  # look at what was behind it
    pixels, _ = rendered_surfaces(empty_scene, tmp_path, "hidden")
    assert is_grey(pixel_at(pixels, 0.25, 0.25)), pixel_at(pixels, 0.25, 0.25)
    for u, v, channel in ((0.08, 0.08, 0), (0.75, 0.25, 1), (0.25, 0.75, 2)):  # red, green, blue quarters
        assert np.argmax(pixel_at(pixels, u, v)) == channel and not is_grey(pixel_at(pixels, u, v))


def test_faces_turned_away_from_the_camera_keep_their_own_colour(tmp_path, empty_scene, generated):
    camera_object = add_camera(empty_scene, location=(0.0, -6.0, 0.5), rotation=(90, 0, 0))
    cube = add_cube(empty_scene)
    cube.rotation_euler = (0, 0, 0)  # the camera sees its front face only
    bpy.context.view_layer.update()
    apply.apply_as_projected_texture(empty_scene, camera_object, cube, generated)
    colours, covered = rendered_surfaces(empty_scene, tmp_path, "front")
    front = colours[covered]
    add_camera(empty_scene, location=(0.0, 6.0, 0.5), rotation=(90, 0, 180))  # the other side: its back face
    colours, covered = rendered_surfaces(empty_scene, tmp_path, "back")
    back = colours[covered]
    assert len(front) > 100 and len(back) > 100
    assert sum(not is_grey(pixel) for pixel in front) > 0.9 * len(front)
    assert all(is_grey(pixel) for pixel in back), back


def test_another_object_sharing_the_material_keeps_its_own_colour(tmp_path, empty_scene, generated):
    camera_object = add_camera(empty_scene, location=(0.0, -6.0, 0.5), rotation=(90, 0, 0))
    textured, other = add_cube(empty_scene, location=(-1.6, 0, 0.5)), add_cube(empty_scene, location=(1.6, 0, 0.5))
    textured.scale = other.scale = (0.6, 0.6, 0.6)
    other.data = textured.data.copy()  # its own mesh (no projection attributes), the same material
    bpy.context.view_layer.update()
    apply.apply_as_projected_texture(empty_scene, camera_object, textured, generated)
    other.data.materials.clear()
    other.data.materials.append(textured.active_material)
    colours, covered = rendered_surfaces(empty_scene, tmp_path, "shared")
    left, right = colours[:, :32][covered[:, :32]], colours[:, 32:][covered[:, 32:]]
    assert len(left) > 50 and len(right) > 50
    assert sum(not is_grey(pixel) for pixel in left) > 0.9 * len(left)
    assert all(is_grey(pixel) for pixel in right), right


def test_the_image_lands_exactly_where_the_camera_saw_it_across_a_large_receding_face(tmp_path, empty_scene):
    """One quad from near the camera to far away: a per-vertex (affine) mapping would bend the
    image's rows; the per-pixel projection puts the row between the halves where the image has it."""
    halves = apply.load_image(write_png(tmp_path / "halves.png", 64, 36, quadrants=(RED, RED, BLUE, BLUE)))
    camera_object = add_camera(empty_scene, location=(0.0, -6.0, 1.0), rotation=(80, 0, 0))
    ground = add_mesh(empty_scene, [(-6, -5, 0), (6, -5, 0), (6, 60, 0), (-6, 60, 0)], [(0, 1, 2, 3)], "Ground")
    apply.apply_as_projected_texture(empty_scene, camera_object, ground, halves)
    colours, covered = rendered_surfaces(empty_scene, tmp_path, "ground")
    column, ground = colours[:, 32], covered[:, 32]  # bottom row first; the sky above the ground is empty
    red_rows = [row for row in range(36) if ground[row] and np.argmax(column[row]) == 0]
    blue_rows = [row for row in range(36) if ground[row] and np.argmax(column[row]) == 2]
    assert red_rows and blue_rows
    assert max(red_rows) == 17 and min(blue_rows) == 18, (red_rows, blue_rows)


def test_the_depth_map_is_packed_with_the_file_and_follows_a_second_apply(tmp_path, empty_scene, generated):
    camera_object = add_camera(empty_scene)
    plane = add_frame_filling_plane(empty_scene, camera_object, distance=5.0)
    apply.apply_as_projected_texture(empty_scene, camera_object, plane, generated)
    depth = bpy.data.images["generated_0001.png depth"]
    assert read_pixels(depth)[:, :, 0] == pytest.approx(5.0, abs=0.01)  # planar depth: the plane's distance
    camera_object.location += camera_object.matrix_world.to_3x3() @ Vector((0, 0, 1))  # one unit back (it looks down -Z)
    bpy.context.view_layer.update()
    apply.apply_as_projected_texture(empty_scene, camera_object, plane, generated)
    path = str(tmp_path / "projected.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    depth = bpy.data.images["generated_0001.png depth"]
    assert depth.packed_file is not None and tuple(depth.size) == (32, 18)
    assert read_pixels(depth)[9, 16, 0] == pytest.approx(6.0, abs=0.01)
    assert bpy.data.materials["SD Projection"].node_tree.nodes["SD Projection Map Depth"].image == depth


def read_pixels(image):
    width, height = image.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, 4)
