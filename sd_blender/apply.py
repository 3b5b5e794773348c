"""Apply a generated image in the scene: as the camera's background, or projected onto a mesh.

Everything here adds to the user's data and never takes away: user UV maps, materials,
nodes and background images are left as they were, and a second apply reuses what the
first one added (found by the names below) instead of stacking copies.
"""
import os

import bpy
import numpy as np

PROJECTION_NAME = "SD Projection"
IMAGE_NODE_NAME = "SD Projection Image"
UV_NODE_NAME = "SD Projection UV"
BACKGROUND_MARKER = "sd_blender_background"


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


def _our_background(camera):
    for background in camera.background_images:
        if background.image is not None and background.image.get(BACKGROUND_MARKER):
            return background
    return None


# ---------------------------------------------------------------------- projected texture


def apply_as_projected_texture(scene, camera_object, mesh_object, image, depsgraph=None):
    """Project `image` from the camera onto the mesh through a UV map of its own; return its name."""
    _require_camera(camera_object)
    _require_editable_mesh(mesh_object)
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    uv_layer = _projection_uv_layer(mesh_object.data)
    uvs = _projected_loop_uvs(scene, camera_object, mesh_object, depsgraph)
    uv_layer.uv.foreach_set("vector", uvs.ravel())
    mesh_object.data.update()
    _fill_empty_material_slots(mesh_object)
    for slot in mesh_object.material_slots:
        _add_projection_nodes(slot.material, image)
    return uv_layer.name


def _require_camera(camera_object):
    if camera_object is None or camera_object.type != 'CAMERA':
        raise ValueError("No camera to project from: set the scene camera (or pick a camera object).")


def _require_editable_mesh(mesh_object):
    if mesh_object is None or mesh_object.type != 'MESH':
        kind = "nothing" if mesh_object is None else f"'{mesh_object.name}' ({mesh_object.type})"
        raise ValueError(f"Select a mesh object to texture; got {kind}.")
    if mesh_object.data.is_editmode:
        raise ValueError(f"Leave Edit Mode on '{mesh_object.name}' before applying the texture.")


def _projection_uv_layer(mesh):
    """The add-on's own UV map (made on the first apply); the active and render maps stay as they were."""
    existing = mesh.uv_layers.get(PROJECTION_NAME)
    if existing is not None:
        return existing
    active_name = mesh.uv_layers.active.name if mesh.uv_layers.active else None
    render_name = next((layer.name for layer in mesh.uv_layers if layer.active_render), None)
    uv_layer = mesh.uv_layers.new(name=PROJECTION_NAME, do_init=False)
    if uv_layer is None:
        raise ValueError(f"'{mesh.name}' already has the most UV maps Blender allows: remove one.")
    if active_name is not None:
        mesh.uv_layers.active = mesh.uv_layers[active_name]
    if render_name is not None:
        mesh.uv_layers[render_name].active_render = True
    return uv_layer


def _projected_loop_uvs(scene, camera_object, mesh_object, depsgraph):
    """Each loop's vertex in camera-frame coordinates: (0, 0) bottom left, (1, 1) top right."""
    mesh = mesh_object.data
    positions = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", positions)
    loop_vertices = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", loop_vertices)
    homogeneous = np.hstack([positions.reshape(-1, 3), np.ones((len(mesh.vertices), 1))])
    clip = homogeneous @ _object_to_clip_matrix(scene, camera_object, mesh_object, depsgraph).T
    frame = clip[:, :2] / clip[:, 3:4] * 0.5 + 0.5
    return frame[loop_vertices].astype(np.float32)


def _object_to_clip_matrix(scene, camera_object, mesh_object, depsgraph):
    render = scene.render
    projection = camera_object.calc_matrix_camera(
        depsgraph,
        x=render.resolution_x,
        y=render.resolution_y,
        scale_x=render.pixel_aspect_x,
        scale_y=render.pixel_aspect_y,
    )
    return np.array(projection @ camera_object.matrix_world.inverted() @ mesh_object.matrix_world)


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


def _add_projection_nodes(material, image):
    """Feed the image, through the projection UV map, into the material's Base Color."""
    tree = _shader_nodes(material)
    principled = _principled_bsdf(tree)
    image_node = _projection_node(tree, IMAGE_NODE_NAME, "ShaderNodeTexImage", principled, (-300, 0))
    uv_node = _projection_node(tree, UV_NODE_NAME, "ShaderNodeUVMap", principled, (-500, 0))
    image_node.image = image
    image_node.extension = 'CLIP'
    uv_node.uv_map = PROJECTION_NAME
    tree.links.new(uv_node.outputs["UV"], image_node.inputs["Vector"])
    if principled is not None:
        tree.links.new(image_node.outputs["Color"], principled.inputs["Base Color"])
    tree.nodes.active = image_node


def _principled_bsdf(tree):
    """The Principled BSDF the material output shows, else the first one in the tree (or None)."""
    output = tree.get_output_node('ALL')
    if output is not None:
        for link in output.inputs["Surface"].links:
            if link.from_node.type == 'BSDF_PRINCIPLED':
                return link.from_node
    return next((node for node in tree.nodes if node.type == 'BSDF_PRINCIPLED'), None)


def _projection_node(tree, name, node_type, anchor, offset):
    node = tree.nodes.get(name)
    if node is None:
        node = tree.nodes.new(node_type)
        node.name = name
        node.location = (anchor.location.x + offset[0], anchor.location.y + offset[1]) if anchor else offset
    node.label = PROJECTION_NAME
    return node
