"""Apply a generated image in the scene: as the camera's background, or projected onto a mesh.

Projection is exact and sees what the camera saw: each vertex stores its clip-space position
from the projecting camera (x, y, w) and its planar camera depth as attributes, the material
divides per pixel (a perspective-correct projection, also across large faces) and compares the
surface's depth with a depth map rendered from the camera (stored with the image, packed): only
surfaces the camera saw, inside its frame, take the image; back and hidden faces, and what lies
outside the frame, keep the material's own colour. A UV map "SD Projection" with the same
projection per vertex is added for use outside Blender.

The background shows twice: as a background image of the camera (the viewport's camera view)
and, for renders, as nodes in the scene's world (see apply_as_render_background), which
remove_render_background takes out again.

Everything here adds to the user's data and never takes away: user UV maps, materials,
nodes and background images are left as they were, and a second apply reuses what the
first one added (found by the names below) instead of stacking copies.
"""
import os
from contextlib import contextmanager

import bpy
import numpy as np

from .passes import render_pass_buffers

PROJECTION_NAME = "SD Projection"
CLIP_ATTRIBUTE = "SD Projection Clip"  # per vertex: the camera's clip-space x, y, w
DEPTH_ATTRIBUTE = "SD Projection Depth"  # per vertex: planar depth from the camera
TEXTURE_NAME = "SD Texture"  # the nodes showing a baked whole-object texture
TILE_NAME = "SD Tile"  # the nodes showing a tileable material image
BACKGROUND_MARKER = "sd_blender_background"
RENDER_BACKGROUND_NAME = "SD Background"  # the world's nodes showing the background to the camera
CREATED_WORLD = "sd_blender_created_world"  # on a world made for the background: the scene had none
WORLD_NODES_SWITCHED_ON = "sd_blender_switched_world_nodes_on"  # Blender 4.x: the world had nodes off
# A surface farther than the depth map by more than this (relative, plus an absolute margin) is
# hidden from the camera. The map is read with linear interpolation between pixel centres, so
# surfaces seen at a grazing angle do not hide themselves; next to an occluder's outline the
# surface behind stays uncovered for about a pixel.
DEPTH_TOLERANCE, DEPTH_MARGIN = 0.02, 1e-3
# Half floats (the packed EXR) end at 65504: where the camera saw nothing, the map says "far".
NOTHING_HIT_DEPTH = 6.0e4


def load_image(path):
    """The image datablock for the PNG at `path`, reloaded from disk if it is already loaded."""
    filepath = os.path.abspath(path)
    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"Generated image not found: {filepath}")
    for image in bpy.data.images:
        if image.filepath and os.path.abspath(bpy.path.abspath(image.filepath)) == filepath:
            image.reload()
            return image
    return bpy.data.images.load(filepath)


# ---------------------------------------------------------------------------- background


def apply_as_background(camera_object, image):
    """Show `image` behind the scene in the camera view, filling the camera frame."""
    _require_camera(camera_object)
    camera = camera_object.data
    background = _our_background(camera) or camera.background_images.new()
    image[BACKGROUND_MARKER] = True
    background.source = 'IMAGE'
    background.image = image
    background.alpha = 1.0
    background.display_depth = 'BACK'
    # The image was rendered at the camera's aspect; STRETCH lines its edges up with the
    # frame even when the server rounded the size to a multiple of 8.
    background.frame_method = 'STRETCH'
    background.show_background_image = True
    camera.show_background_images = True


def apply_sequence_as_background(camera_object, first_image, first_frame, frame_count):
    """Show an image sequence (first_image's file is frame first_frame's; the file names end in
    the frame number) behind the scene, frame by frame with the timeline."""
    first_image.source = 'SEQUENCE'
    apply_as_background(camera_object, first_image)
    _follow_timeline(_our_background(camera_object.data).image_user, first_frame, frame_count)


def _follow_timeline(image_user, first_frame, frame_count):
    image_user.frame_start = first_frame
    image_user.frame_offset = first_frame - 1  # the file numbered first_frame shows at first_frame
    image_user.frame_duration = frame_count
    image_user.use_auto_refresh = True


def _our_background(camera):
    for background in camera.background_images:
        if background.image is not None and background.image.get(BACKGROUND_MARKER):
            return background
    return None


def apply_as_render_background(scene, image):
    """Show `image` behind the scene in renders (and the viewport's rendered mode), stretched to the
    camera frame like the viewport background: nodes in the scene's world give camera rays the image
    (emission 1: with the Standard view transform the render shows the image's own pixels) and every
    other ray what the world gave before, so the world lights the scene as it did. A scene without a
    world gets a black one, which lights nothing, as no world did. Returns the Image Texture node."""
    world = _world_for_background(scene)
    tree = _world_nodes(world)
    output = _world_output(tree) or _new_world_output(tree)
    node = _NodeMaker(tree, output, RENDER_BACKGROUND_NAME)
    coordinates = node("Coordinates", "ShaderNodeTexCoord", (-600, 500))
    image_node = node("Image", "ShaderNodeTexImage", (-400, 500), image=image, extension='EXTEND')
    emission = node("Emission", "ShaderNodeBackground", (-100, 400))
    light_path = node("Light Path", "ShaderNodeLightPath", (-100, 800))
    mix = node("Mix", "ShaderNodeMixShader", (150, 500))
    tree.links.new(coordinates.outputs["Window"], image_node.inputs["Vector"])
    tree.links.new(image_node.outputs["Color"], emission.inputs["Color"])
    emission.inputs["Strength"].default_value = 1.0
    tree.links.new(light_path.outputs["Is Camera Ray"], mix.inputs["Fac"])
    _insert_before_surface(tree, output, mix)
    tree.links.new(emission.outputs["Background"], mix.inputs[2])
    return image_node


def _world_for_background(scene):
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
        scene.world[CREATED_WORLD] = True
        _world_nodes(scene.world)
        background = next(node for node in scene.world.node_tree.nodes if node.type == 'BACKGROUND')
        background.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
    return scene.world


def _world_nodes(world):
    """The world's node tree, switching nodes on where Blender 4.x has them off (and noting it)."""
    if bpy.app.version < (5, 0, 0) and not world.use_nodes:
        world[WORLD_NODES_SWITCHED_ON] = True
        world.use_nodes = True  # the Background node it adds has the world's colour: renders as before
    return world.node_tree


def _world_output(tree):
    """The output the world renders through: the one for all engines, else the active one (or None)."""
    active = (node for node in tree.nodes if node.type == 'OUTPUT_WORLD' and node.is_active_output)
    return tree.get_output_node('ALL') or next(active, None)


def _new_world_output(tree):
    """For a world without output (it rendered nothing): one of the add-on's nodes, removed with them."""
    return _NodeMaker(tree, None, RENDER_BACKGROUND_NAME)("Output", "ShaderNodeOutputWorld", (0, 0))


def _insert_before_surface(tree, output, mix):
    """Feed the output's Surface through the mix's first shader, unless it is fed by the mix already."""
    surface = output.inputs["Surface"]
    source = surface.links[0].from_socket if surface.links else None
    if source is not None and source.node == mix:
        return
    for link in mix.inputs[1].links:
        tree.links.remove(link)
    if source is not None:
        tree.links.new(source, mix.inputs[1])
    tree.links.new(mix.outputs["Shader"], surface)


def remove_render_background(scene):
    """Put the scene's world back as it was before apply_as_render_background: its own nodes and
    links (nodes off again where they were off), or no world where it had none."""
    world = scene.world
    if world is None:
        return
    if world.get(CREATED_WORLD):
        scene.world = None
        if world.users == 0:
            bpy.data.worlds.remove(world)
        return
    if world.node_tree is not None:
        _remove_background_nodes(world.node_tree)
    if world.get(WORLD_NODES_SWITCHED_ON):
        world.use_nodes = False
        del world[WORLD_NODES_SWITCHED_ON]


def _remove_background_nodes(tree):
    mix = tree.nodes.get(f"{RENDER_BACKGROUND_NAME} Mix")
    if mix is not None and mix.inputs[1].links:
        source = mix.inputs[1].links[0].from_socket
        for link in mix.outputs["Shader"].links:
            tree.links.new(source, link.to_socket)
    for node in [node for node in tree.nodes if node.name.startswith(f"{RENDER_BACKGROUND_NAME} ")]:
        tree.nodes.remove(node)


def film_transparent_note(scene):
    """What to add to a report of a background applied: Film Transparent, left as the user set it
    (their compositing may need it), hides the world, and so the background, in renders."""
    if scene.render.film_transparent:
        return " (Film Transparent hides it in renders: Render Properties ▸ Film)"
    return ""


# ---------------------------------------------------------------------- projected texture


def apply_as_projected_texture(scene, camera_object, mesh_object, image, depth_image=None):
    """Project `image` from the camera onto the visible parts of the mesh (see the module doc);
    `depth_image` is the camera's depth map (projection_depth_image), rendered when not given."""
    _require_camera(camera_object)
    require_editable_mesh(mesh_object)
    depth_image = depth_image or projection_depth_image(scene, camera_object, image)
    mesh = mesh_object.data
    clip, depth = _projected_vertices(scene, camera_object, mesh_object, bpy.context.evaluated_depsgraph_get())
    _point_attribute(mesh, CLIP_ATTRIBUTE, 'FLOAT_VECTOR').data.foreach_set("vector", clip.ravel())
    _point_attribute(mesh, DEPTH_ATTRIBUTE, 'FLOAT').data.foreach_set("value", depth)
    loop_vertices = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", loop_vertices)
    w = np.where(np.abs(clip[:, 2:3]) < 1e-9, 1e-9, clip[:, 2:3])  # a vertex in the camera's plane
    frame = (clip[:, :2] / w * 0.5 + 0.5)[loop_vertices]
    _projection_uv_layer(mesh).uv.foreach_set("vector", frame.astype(np.float32).ravel())
    mesh.update()
    _fill_empty_material_slots(mesh_object)
    for slot in mesh_object.material_slots:
        _add_projection_nodes(slot.material, image, depth_image)


def projection_depth_image(scene, camera_object, image):
    """The planar depth the camera sees, rendered at the size of `image` into a float image
    "<image> depth" (R = G = B = depth), packed into the .blend with it."""
    width, height = image.size
    with as_scene_camera(scene, camera_object):
        distance = render_pass_buffers(scene, ["depth"], width, height)["depth"]
    name = f"{image.name} depth"
    depth_image = bpy.data.images.get(name) or bpy.data.images.new(name, width, height, float_buffer=True, is_data=True)
    if tuple(depth_image.size) != (width, height):
        depth_image.scale(width, height)
    pixels = np.ones((height, width, 4), dtype=np.float32)
    pixels[..., :3] = np.minimum(distance, NOTHING_HIT_DEPTH)[::-1, :, None]  # Blender's rows run bottom up
    depth_image.pixels.foreach_set(pixels.ravel())
    depth_image.file_format = 'OPEN_EXR'
    depth_image.pack()
    return depth_image


@contextmanager
def as_scene_camera(scene, camera_object):
    previous = scene.camera
    scene.camera = camera_object
    try:
        yield
    finally:
        scene.camera = previous


def _require_camera(camera_object):
    if camera_object is None or camera_object.type != 'CAMERA':
        raise ValueError("No camera to project from: set the scene camera (or pick a camera object).")


def require_editable_mesh(mesh_object):
    if mesh_object is None or mesh_object.type != 'MESH':
        kind = "nothing" if mesh_object is None else f"'{mesh_object.name}' ({mesh_object.type})"
        raise ValueError(f"Select a mesh object to texture; got {kind}.")
    if mesh_object.data.is_editmode:
        raise ValueError(f"Leave Edit Mode on '{mesh_object.name}' before applying the texture.")


def _projection_uv_layer(mesh):
    return own_uv_layer(mesh, PROJECTION_NAME)


def own_uv_layer(mesh, name):
    """The add-on's own UV map `name` (made on first use); the active and render maps stay as they were."""
    existing = mesh.uv_layers.get(name)
    if existing is not None:
        return existing
    with kept_active_uv_maps(mesh):
        uv_layer = mesh.uv_layers.new(name=name, do_init=False)
    if uv_layer is None:
        raise ValueError(f"'{mesh.name}' already has the most UV maps Blender allows: remove one.")
    return uv_layer


@contextmanager
def kept_active_uv_maps(mesh):
    """Put the mesh's active and render UV maps back as they were afterwards."""
    active_name = mesh.uv_layers.active.name if mesh.uv_layers.active else None
    render_name = next((layer.name for layer in mesh.uv_layers if layer.active_render), None)
    try:
        yield
    finally:
        if active_name is not None:
            mesh.uv_layers.active = mesh.uv_layers[active_name]
        if render_name is not None:
            mesh.uv_layers[render_name].active_render = True


def _point_attribute(mesh, name, data_type):
    attribute = mesh.attributes.get(name)
    if attribute is None or attribute.data_type != data_type or attribute.domain != 'POINT':
        if attribute is not None:
            mesh.attributes.remove(attribute)
        attribute = mesh.attributes.new(name, data_type, 'POINT')
    return attribute


def _projected_vertices(scene, camera_object, mesh_object, depsgraph):
    """Per vertex: the clip-space (x, y, w) from the camera, and the planar camera depth. Both are
    affine in the position, so interpolating them across a face is exact."""
    mesh = mesh_object.data
    positions = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", positions)
    homogeneous = np.hstack([positions.reshape(-1, 3), np.ones((len(mesh.vertices), 1))])
    object_to_view = np.array(camera_object.matrix_world.inverted() @ mesh_object.matrix_world)
    view = homogeneous @ object_to_view.T
    clip = view @ np.array(_projection_matrix(scene, camera_object, depsgraph)).T
    return clip[:, [0, 1, 3]].astype(np.float32), (-view[:, 2]).astype(np.float32)


def _projection_matrix(scene, camera_object, depsgraph):
    render = scene.render
    return camera_object.calc_matrix_camera(
        depsgraph,
        x=render.resolution_x,
        y=render.resolution_y,
        scale_x=render.pixel_aspect_x,
        scale_y=render.pixel_aspect_y,
    )


# ----------------------------------------------------------------------------- materials


def _fill_empty_material_slots(mesh_object):
    """Give an object without material (or an empty slot) a new material of its own to show the image."""
    empty_slots = [slot for slot in mesh_object.material_slots if slot.material is None]
    if not mesh_object.material_slots:
        mesh_object.data.materials.append(_new_projection_material())
    for slot in empty_slots:
        slot.material = _new_projection_material()


def _new_projection_material():
    material = bpy.data.materials.new(PROJECTION_NAME)
    _shader_nodes(material)
    return material


def _shader_nodes(material):
    """The material's node tree, switching nodes on where Blender 4.x has them off (always on in 5.x)."""
    if bpy.app.version < (5, 0, 0) and not material.use_nodes:
        material.use_nodes = True
    return material.node_tree


def _add_projection_nodes(material, image, depth_image):
    """Show the image, projected, on what the camera saw (see the module doc): a mix into the
    material's Base Color whose factor is 1 on visible surfaces inside the frame. What fed the
    Base Color before the first projection stays as the mix's other colour."""
    tree = _shader_nodes(material)
    principled = _principled_bsdf(tree)
    node = _NodeMaker(tree, principled, PROJECTION_NAME)
    frame = _frame_coordinates(node, tree.links)
    image_node = node("Image", "ShaderNodeTexImage", (-450, 150), image=image, extension='CLIP')
    tree.links.new(frame, image_node.inputs["Vector"])
    visible = _visibility(node, tree.links, frame, depth_image, image_node.outputs["Alpha"])
    _mix_into_base_color(tree, principled, node, image_node, visible)


def _mix_into_base_color(tree, principled, node, image_node, factor):
    """A Mix node (found or added) showing the image where `factor` (a socket or a number) is 1;
    what fed the Base Color before the first mix stays as the mix's other colour."""
    new_mix = tree.nodes.get(node.name("Mix")) is None
    mix = node("Mix", "ShaderNodeMix", (450, 0), data_type='RGBA')
    if isinstance(factor, bpy.types.NodeSocket):
        tree.links.new(factor, mix.inputs["Factor"])
    else:
        mix.inputs["Factor"].default_value = factor
    tree.links.new(image_node.outputs["Color"], _color_socket(mix.inputs, "B"))
    if principled is not None:
        base_color = principled.inputs["Base Color"]
        if new_mix:
            _keep_original_colour(tree, base_color, _color_socket(mix.inputs, "A"))
        tree.links.new(_color_socket(mix.outputs, "Result"), base_color)
    tree.nodes.active = image_node


# --------------------------------------------------------------------------- baked texture


def apply_as_baked_texture(mesh_object, image, uv_name):
    """Show a texture baked into the UV map `uv_name` on the object: an Image Texture node reading
    that map, mixed in fully over the material's Base Color (which stays as the mix's other input)."""
    _show_through_uv_map(mesh_object, image, uv_name, TEXTURE_NAME, 'EXTEND')


def apply_as_tiling_material(mesh_object, image):
    """Show a seamless tile on the object's materials, repeated through its render UV map."""
    if not mesh_object.data.uv_layers:
        raise ValueError(f"'{mesh_object.name}' has no UV map for the tile: unwrap it (or use Generate Texture)")
    _show_through_uv_map(mesh_object, image, "", TILE_NAME, 'REPEAT')


def _show_through_uv_map(mesh_object, image, uv_name, prefix, extension):
    """An Image Texture node reading the UV map `uv_name` ("": the render map) in each material of
    the object, mixed in fully over its Base Color (which stays as the mix's other input)."""
    require_editable_mesh(mesh_object)
    _fill_empty_material_slots(mesh_object)
    for slot in mesh_object.material_slots:
        tree = _shader_nodes(slot.material)
        principled = _principled_bsdf(tree)
        node = _NodeMaker(tree, principled, prefix)
        uv_map = node("UV Map", "ShaderNodeUVMap", (-700, 150), uv_map=uv_name)
        image_node = node("Image", "ShaderNodeTexImage", (-450, 150), image=image, extension=extension)
        tree.links.new(uv_map.outputs["UV"], image_node.inputs["Vector"])
        _mix_into_base_color(tree, principled, node, image_node, 1.0)


def _frame_coordinates(node, links):
    """The output giving each shaded point's place in the camera frame, (0, 0) bottom left to
    (1, 1) top right: the clip-space attribute divided per pixel."""
    clip = node("Clip", "ShaderNodeAttribute", (-1500, 0), attribute_name=CLIP_ATTRIBUTE)
    separate = node("Separate", "ShaderNodeSeparateXYZ", (-1300, 0))
    combine = node("Combine", "ShaderNodeCombineXYZ", (-900, 0))
    frame = node("Frame", "ShaderNodeVectorMath", (-700, 0), operation='MULTIPLY_ADD')
    links.new(clip.outputs["Vector"], separate.inputs[0])
    for axis, y in (("X", 80), ("Y", -80)):
        divide = node(f"Divide {axis}", "ShaderNodeMath", (-1100, y), operation='DIVIDE')
        links.new(separate.outputs[axis], divide.inputs[0])
        links.new(separate.outputs["Z"], divide.inputs[1])
        links.new(divide.outputs[0], combine.inputs[axis])
    links.new(combine.outputs[0], frame.inputs[0])
    frame.inputs[1].default_value = frame.inputs[2].default_value = (0.5, 0.5, 0.0)
    return frame.outputs["Vector"]


def _visibility(node, links, frame, depth_image, in_frame):
    """The output that is 1 where the camera saw the shaded point: in front of the camera, no
    farther than the depth map says (with the tolerance), and inside the frame (`in_frame`)."""
    map_depth = node("Map Depth", "ShaderNodeTexImage", (-450, -200), image=depth_image, extension='EXTEND')
    limit = node("Limit", "ShaderNodeMath", (-200, -200), operation='MULTIPLY_ADD')
    surface_depth = node("Surface Depth", "ShaderNodeAttribute", (-450, -450), attribute_name=DEPTH_ATTRIBUTE)
    seen = node("Seen", "ShaderNodeMath", (0, -300), operation='LESS_THAN')
    # Depth 0: no projection attributes (another object sharing the material) or behind the camera.
    in_front = node("In Front", "ShaderNodeMath", (0, -450), operation='GREATER_THAN')
    seen_in_front = node("Seen In Front", "ShaderNodeMath", (150, -350), operation='MULTIPLY')
    visible = node("Visible", "ShaderNodeMath", (300, -150), operation='MULTIPLY')
    links.new(frame, map_depth.inputs["Vector"])
    links.new(map_depth.outputs["Color"], limit.inputs[0])
    limit.inputs[1].default_value, limit.inputs[2].default_value = 1.0 + DEPTH_TOLERANCE, DEPTH_MARGIN
    links.new(surface_depth.outputs["Fac"], seen.inputs[0])
    links.new(limit.outputs[0], seen.inputs[1])
    links.new(surface_depth.outputs["Fac"], in_front.inputs[0])
    in_front.inputs[1].default_value = 0.0
    links.new(seen.outputs[0], seen_in_front.inputs[0])
    links.new(in_front.outputs[0], seen_in_front.inputs[1])
    links.new(seen_in_front.outputs[0], visible.inputs[0])
    links.new(in_frame, visible.inputs[1])  # the image's alpha: CLIP makes it 0 outside the frame
    return visible.outputs[0]


def _keep_original_colour(tree, base_color, mix_input):
    if base_color.links:
        tree.links.new(base_color.links[0].from_socket, mix_input)
    else:
        mix_input.default_value = base_color.default_value


def _color_socket(sockets, name):
    """The colour socket `name` of a Mix node (it has one per data type under the same name)."""
    return next(socket for socket in sockets if socket.name == name and socket.type == 'RGBA')


class _NodeMaker:
    """Finds or adds the add-on's nodes, named "<prefix> <part>", placed left of the BSDF."""

    def __init__(self, tree, anchor, prefix):
        self.tree, self.prefix = tree, prefix
        self.origin = (anchor.location.x - 400, anchor.location.y) if anchor else (0, 0)

    def name(self, part):
        return f"{self.prefix} {part}"

    def __call__(self, part, node_type, offset, **settings):
        name = self.name(part)
        node = self.tree.nodes.get(name)
        if node is None:
            node = self.tree.nodes.new(node_type)
            node.name = name
            node.location = (self.origin[0] + offset[0], self.origin[1] + offset[1])
        node.label = self.prefix
        for key, value in settings.items():
            setattr(node, key, value)
        return node


def _principled_bsdf(tree):
    """The Principled BSDF the material output shows, else the first one in the tree (or None)."""
    output = tree.get_output_node('ALL')
    if output is not None:
        for link in output.inputs["Surface"].links:
            if link.from_node.type == 'BSDF_PRINCIPLED':
                return link.from_node
    return next((node for node in tree.nodes if node.type == 'BSDF_PRINCIPLED'), None)


def apply_frames_as_background(scene, paths, first_frame):
    """Show the frames' results (one a frame, from first_frame on) as the camera's background and
    in renders (apply_as_render_background), an image sequence that follows the timeline."""
    if scene.camera is None:
        raise ValueError("the scene has no active camera to show the frames behind")
    first_image = load_image(paths[0])
    apply_sequence_as_background(scene.camera, first_image, first_frame, len(paths))
    _follow_timeline(apply_as_render_background(scene, first_image).image_user, first_frame, len(paths))


def _selected_meshes(object_names, purpose):
    meshes = [bpy.data.objects[name] for name in object_names if name in bpy.data.objects]
    if not meshes:
        raise ValueError(f"select the mesh objects {purpose} before generating")
    return meshes


def apply_results(scene, paths, apply_to, object_names):
    """Load the generated images into Blender and apply the first as asked. Returns the images."""
    images = [load_image(path) for path in paths]
    if not images or apply_to == "NONE":
        return images
    if apply_to == "MATERIAL":
        for mesh_object in _selected_meshes(object_names, "to put the tile on"):
            apply_as_tiling_material(mesh_object, images[0])
        return images
    camera = scene.camera
    if camera is None:
        raise ValueError("the scene has no active camera to apply the result through")
    if apply_to == "BACKGROUND":
        apply_as_background(camera, images[0])
        apply_as_render_background(scene, images[0])
    elif apply_to == "TEXTURE":
        meshes = _selected_meshes(object_names, "to texture")
        depth_image = projection_depth_image(scene, camera, images[0])  # one render for every mesh
        for mesh_object in meshes:
            apply_as_projected_texture(scene, camera, mesh_object, images[0], depth_image)
    return images
