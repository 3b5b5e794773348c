"""A background that renders: the applied image behind the scene in Cycles' final render, the world
lighting the scene as before, and the world put back as it was when the background comes off."""
import bpy
import numpy as np
import pytest

from scenes import add_camera, add_cube, set_resolution
from sd_blender.core.png import write_png
from sd_blender.scene import apply

WIDTH, HEIGHT = 64, 36
SKY = (0.3, 0.4, 0.6, 1.0)  # the user's world colour: the only light in the scene


def gradient(width=WIDTH, height=HEIGHT):
    """8-bit RGB, top row first: red grows to the right, green downwards, blue is constant."""
    columns, rows = np.meshgrid(np.linspace(40, 220, width), np.linspace(30, 200, height))
    return np.stack([columns, rows, np.full_like(rows, 128)], axis=-1).round().astype(np.uint8)


def flat(colour):
    return np.broadcast_to(np.array(colour, np.uint8), (HEIGHT, WIDTH, 3)).copy()


def image_file(path, pixels):
    write_png(path, pixels)
    return str(path)


@pytest.fixture
def lit_cube_scene(empty_scene):
    """A grey cube in the middle of the frame, lit only by a blue-grey world; Standard view
    transform, so a rendered emission of 1 gives back an image's own 8-bit values."""
    scene = empty_scene
    set_resolution(scene, WIDTH, HEIGHT)
    add_camera(scene)
    add_cube("Cube")
    scene.world = bpy.data.worlds.new("Sky")
    if bpy.app.version < (5, 0, 0):
        scene.world.use_nodes = True
    background = next(node for node in scene.world.node_tree.nodes if node.type == 'BACKGROUND')
    background.inputs["Color"].default_value = SKY
    scene.view_settings.view_transform = 'Standard'
    scene.render.engine = 'CYCLES'
    scene.cycles.device = 'CPU'
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    scene.render.dither_intensity = 0.0  # the 8-bit file keeps the rendered values without noise
    return scene


def render(scene, path):
    """The scene's render as 8-bit values in 0..1, top row first, RGB."""
    scene.render.filepath = str(path)
    scene.render.image_settings.file_format = 'PNG'
    scene.render.image_settings.color_mode = 'RGB'
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    pixels = np.array(image.pixels[:]).reshape(HEIGHT, WIDTH, 4)[::-1, :, :3]
    bpy.data.images.remove(image)
    return pixels


def sky_pixels(before):
    """Where the render before the background showed only the world, and so did the pixels next to
    them (nothing in front of them, not even an outline blended into the pixel)."""
    sky = np.all(np.abs(before - before[0, 0]) < 1.5 / 255, axis=-1)
    around = np.pad(sky, 1, constant_values=True)
    return sky & around[:-2, 1:-1] & around[2:, 1:-1] & around[1:-1, :-2] & around[1:-1, 2:]


def cube_face(pixels):
    return pixels[HEIGHT // 2 - 3: HEIGHT // 2 + 3, WIDTH // 2 - 3: WIDTH // 2 + 3].mean(axis=(0, 1))


def node_graph(world):
    tree = world.node_tree
    nodes = sorted((node.name, node.bl_idname) for node in tree.nodes)
    links = sorted((link.from_node.name, link.from_socket.identifier, link.to_node.name, link.to_socket.identifier)
                   for link in tree.links)
    return nodes, links


EEVEE = 'BLENDER_EEVEE_NEXT' if bpy.app.version < (5, 0, 0) else 'BLENDER_EEVEE'


@pytest.mark.parametrize("engine", ['CYCLES', EEVEE])
def test_the_render_shows_the_image_behind_the_scene_and_the_world_still_lights_it(tmp_path, lit_cube_scene, engine):
    scene = lit_cube_scene
    scene.render.engine = engine
    scene.eevee.taa_render_samples = 4
    try:
        before = render(scene, tmp_path / "before.png")
    except RuntimeError as error:  # EEVEE needs OpenGL (EGL, Mesa where there is no GPU)
        pytest.skip(f"{engine} cannot render here: {error}")
    apply.apply_results(scene, [image_file(tmp_path / "generated.png", gradient())], "BACKGROUND", ())
    after = render(scene, tmp_path / "after.png")
    sky = sky_pixels(before)
    assert sky.mean() > 0.5
    assert np.abs(after[sky] - gradient()[sky] / 255).max() <= 2.5 / 255
    assert cube_face(after) == pytest.approx(cube_face(before), abs=1.5 / 255)
    assert cube_face(before)[2] > cube_face(before)[0] + 0.05  # the blue world lights the cube


def test_frames_render_the_image_of_their_own_frame(tmp_path, lit_cube_scene):
    scene = lit_cube_scene
    colours = {1: (200, 40, 40), 2: (40, 200, 40), 3: (40, 40, 200)}
    paths = [image_file(tmp_path / f"shot_{frame:04d}.png", flat(colour)) for frame, colour in colours.items()]
    apply.apply_frames_as_background(scene, paths, 1)
    for frame in (2, 3):
        scene.frame_set(frame)
        corner = render(scene, tmp_path / f"frame_{frame}.png")[0, 0]
        assert corner * 255 == pytest.approx(colours[frame], abs=2.5)


def test_applying_again_reuses_the_nodes_and_shows_the_new_image(tmp_path, lit_cube_scene):
    scene = lit_cube_scene
    first = apply.load_image(image_file(tmp_path / "first.png", gradient()))
    second = apply.load_image(image_file(tmp_path / "second.png", flat((250, 120, 10))))
    apply.apply_as_render_background(scene, first)
    graph = node_graph(scene.world)
    shown = apply.apply_as_render_background(scene, second)
    assert node_graph(scene.world) == graph
    assert shown.image == second
    assert render(scene, tmp_path / "second_render.png")[0, 0] * 255 == pytest.approx((250, 120, 10), abs=2.5)


def test_a_world_rendering_through_a_cycles_only_output_shows_the_image_there(tmp_path, lit_cube_scene):
    scene = lit_cube_scene
    output = next(node for node in scene.world.node_tree.nodes if node.type == 'OUTPUT_WORLD')
    output.target = 'CYCLES'
    apply.apply_as_render_background(scene, apply.load_image(image_file(tmp_path / "generated.png", gradient())))
    corner = render(scene, tmp_path / "cycles_output.png")[0, 0]
    assert np.abs(corner - gradient()[0, 0] / 255).max() <= 2.5 / 255


def test_removing_puts_the_worlds_nodes_and_links_back(tmp_path, lit_cube_scene):
    scene = lit_cube_scene
    tree = scene.world.node_tree
    sky_colour = tree.nodes.new("ShaderNodeRGB")  # a user's node feeding the world's Background
    tree.links.new(sky_colour.outputs["Color"], next(n for n in tree.nodes if n.type == 'BACKGROUND').inputs["Color"])
    before = node_graph(scene.world)
    image = apply.load_image(image_file(tmp_path / "generated.png", gradient()))
    apply.apply_as_render_background(scene, image)
    apply.apply_as_render_background(scene, image)
    apply.remove_render_background(scene)
    assert node_graph(scene.world) == before


def test_a_scene_without_world_gets_a_black_one_and_has_none_again_after_removal(tmp_path, lit_cube_scene):
    scene = lit_cube_scene
    bpy.data.worlds.remove(scene.world)
    before = render(scene, tmp_path / "no_world.png")
    image = apply.load_image(image_file(tmp_path / "generated.png", gradient()))
    apply.apply_as_render_background(scene, image)
    after = render(scene, tmp_path / "made_world.png")
    assert np.abs(after[0, 0] - gradient()[0, 0] / 255).max() <= 2.5 / 255
    assert cube_face(after) == pytest.approx(cube_face(before), abs=1.5 / 255)  # lit by nothing, as before
    apply.remove_render_background(scene)
    assert scene.world is None and len(bpy.data.worlds) == 0


@pytest.mark.skipif(bpy.app.version >= (5, 0, 0), reason="Blender 5 worlds always use nodes")
def test_a_world_without_nodes_has_them_off_again_after_removal(tmp_path, lit_cube_scene):
    scene = lit_cube_scene
    scene.world.use_nodes = False
    image = apply.load_image(image_file(tmp_path / "generated.png", gradient()))
    apply.apply_as_render_background(scene, image)
    assert scene.world.use_nodes
    apply.remove_render_background(scene)
    assert not scene.world.use_nodes


def test_film_transparent_is_left_as_it_is_and_said_to_hide_the_background(tmp_path, lit_cube_scene):
    scene = lit_cube_scene
    assert apply.film_transparent_note(scene) == ""
    scene.render.film_transparent = True
    apply.apply_results(scene, [image_file(tmp_path / "generated.png", gradient())], "BACKGROUND", ())
    assert scene.render.film_transparent
    assert "Film Transparent hides it in renders" in apply.film_transparent_note(scene)
