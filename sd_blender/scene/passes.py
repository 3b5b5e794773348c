"""Render control passes from the scene: exact float buffers from Cycles, then control images.

All geometry passes (depth, normal, lineart, canny, seg) come from ONE Cycles render with a
view-layer material override, 1 sample and a pixel filter narrower than a pixel, so every
pixel holds the exact value at its centre, read back from a 32-bit float EXR. From the bpy
module Blender 5.0 writes no extra passes, so everything travels in the Combined pass:

    R = camera depth (View Z), G, B = the world normal's polar angle and azimuth,
    A = 1 − (0.25 + surface id · 2⁻²¹), through a holdout mixed into the emission.

The surface id is a temporary custom property on every object (its first id, one per material
slot), read by an Attribute node, plus the face's material index; the properties are removed
afterwards. Mixing in the holdout makes the film alpha carry the id and scales the emission by
the same alpha, which the reader divides out. Alpha stays in [0.25, 0.75] on surfaces, so
neither closure weight is small enough for Cycles to drop, and 0 where nothing was hit.

The color pass is the beauty render (the scene's own engine and settings) at the asked size.
OpenPose is drawn from the armatures, not rendered. The user's settings are changed only for
the duration of a render and are put back afterwards.
"""
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import bpy
import numpy as np

from ..core.depth import BACKGROUND_DISTANCE, inverse_depth_image
from ..core.lineart import edge_strength, line_image
from ..core.normal import camera_space_normals, normal_image, normals_from_angles
from ..core.openpose import draw_openpose
from ..core.pass_options import PassOptions
from ..core.segmentation import resolve_class, segmentation_image
from .pose import scene_people

PASSES = (  # (kind, label, description): the command line's names and the panel's items
    ("depth", "Depth", "Inverse depth from the geometry: near white, far black"),
    ("normal", "Normal", "Camera-space normals, normalbae colours"),
    ("openpose", "OpenPose", "Skeletons of the armatures, drawn as the OpenPose annotator draws them"),
    ("lineart", "Line art", "White lines on black from silhouettes and creases"),
    ("canny", "Canny", "Line art with your own threshold, for canny ControlNets"),
    ("seg", "Segmentation", "ADE20K class colours per object"),
    ("color", "Color", "The scene's own render, for the tile ControlNet"),
)
PASS_KINDS = tuple(kind for kind, _, _ in PASSES)

SURFACE_ID_PROPERTY = "sd_blender_surface_id"
LAST_SLOT_PROPERTY = "sd_blender_last_slot"
_ID_ALPHA_OFFSET, _ID_ALPHA_STEP = 0.25, 2.0 ** -21
MAX_SURFACE_IDS = 2 ** 20  # keeps 1 − alpha within [0.25, 0.75]


class PassError(Exception):
    """The scene cannot be rendered into passes; the message says what to fix."""


@contextmanager
def temporarily_set(settings):
    """Set (owner, attribute, value) triples, restoring the old values afterwards.

    Restored in the order given: an image format's media type and file format must come back
    before its color_depth, which they constrain.
    """
    saved = [(owner, attribute, getattr(owner, attribute)) for owner, attribute, _ in settings]
    try:
        for owner, attribute, value in settings:
            setattr(owner, attribute, value)
        yield
    finally:
        for owner, attribute, value in saved:
            setattr(owner, attribute, value)


def _file_settings(render, path, file_format, color_mode, color_depth):
    """Blender 5.0 added media_type, which must be set before the file format."""
    image_settings = render.image_settings
    media_type = [(image_settings, "media_type", "IMAGE")] if hasattr(image_settings, "media_type") else []
    return [(render, "filepath", path)] + media_type + [
        (image_settings, "file_format", file_format),
        (image_settings, "color_mode", color_mode),
        (image_settings, "color_depth", color_depth),
    ]


def _frame_settings(render, width, height):
    return [
        (render, "resolution_x", width),
        (render, "resolution_y", height),
        (render, "resolution_percentage", 100),
        (render, "pixel_aspect_x", 1.0),
        (render, "pixel_aspect_y", 1.0),
        (render, "use_border", False),
        (render, "use_multiview", False),
        (render, "use_sequencer", False),
    ]


def _geometry_render_settings(scene, view_layer, material, width, height, exr_path):
    """Exact values at pixel centres: nothing that blurs, blends, clamps, scales or hides them
    (a shadow catcher would only show the shadows on it)."""
    render, cycles = scene.render, scene.cycles
    return _frame_settings(render, width, height) + [
        (render, "engine", "CYCLES"),
        (cycles, "samples", 1),
        (cycles, "use_adaptive_sampling", False),
        (cycles, "use_denoising", False),
        (cycles, "filter_width", 0.01),
        (cycles, "sample_clamp_direct", 0.0),
        (cycles, "film_exposure", 1.0),
        (render, "film_transparent", True),
        (render, "use_motion_blur", False),
        (render, "use_freestyle", False),
        (render, "use_persistent_data", False),
        (render, "use_compositing", False),
        (render, "use_single_layer", True),
        (scene.camera.data.dof, "use_dof", False),
        (view_layer, "use_volumes", False),
        (view_layer, "use_grease_pencil", False),
        (view_layer, "material_override", material),
    ] + [(obj, "is_shadow_catcher", False) for obj in scene.objects if obj.is_shadow_catcher] + _file_settings(
        render, exr_path, "OPEN_EXR", "RGBA", "32")


def _beauty_render_settings(scene, width, height, png_path):
    return _frame_settings(scene.render, width, height) + _file_settings(scene.render, png_path, "PNG", "RGB", "8")


def _math(nodes, links, operation, *inputs):
    """A Math node; each input is a socket to link or a number."""
    node = nodes.new("ShaderNodeMath")
    node.operation = operation
    for socket, value in zip(node.inputs, inputs):
        if isinstance(value, bpy.types.NodeSocket):
            links.new(value, socket)
        else:
            socket.default_value = value
    return node.outputs[0]


def _attribute(nodes, attribute_type, name):
    node = nodes.new("ShaderNodeAttribute")
    node.attribute_type, node.attribute_name = attribute_type, name
    return node.outputs["Fac"]


def _surface_id_alpha_fraction(nodes, links):
    """0.25 + id · step, where id = the object's first id + the face's material slot."""
    slot = _math(nodes, links, "MINIMUM", _attribute(nodes, "GEOMETRY", "material_index"),
                 _attribute(nodes, "OBJECT", LAST_SLOT_PROPERTY))
    surface_id = _math(nodes, links, "ADD", _attribute(nodes, "OBJECT", SURFACE_ID_PROPERTY), slot)
    return _math(nodes, links, "MULTIPLY_ADD", surface_id, _ID_ALPHA_STEP, _ID_ALPHA_OFFSET)


def _depth_and_normal_angles(nodes, links):
    normal = nodes.new("ShaderNodeSeparateXYZ")
    links.new(nodes.new("ShaderNodeNewGeometry").outputs["Normal"], normal.inputs[0])
    values = nodes.new("ShaderNodeCombineXYZ")
    links.new(nodes.new("ShaderNodeCameraData").outputs["View Z Depth"], values.inputs[0])
    links.new(_math(nodes, links, "ARCCOSINE", normal.outputs["Z"]), values.inputs[1])
    links.new(_math(nodes, links, "ARCTAN2", normal.outputs["Y"], normal.outputs["X"]), values.inputs[2])
    return values.outputs[0]


def _geometry_material():
    """A temporary material emitting the geometry values, see the module doc."""
    material = bpy.data.materials.new("SD geometry pass")
    if bpy.app.version < (5, 0, 0):  # node trees are always on from 5.0, and use_nodes is deprecated
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    emission, mix = nodes.new("ShaderNodeEmission"), nodes.new("ShaderNodeMixShader")
    links.new(_depth_and_normal_angles(nodes, links), emission.inputs["Color"])
    links.new(_surface_id_alpha_fraction(nodes, links), mix.inputs["Fac"])
    links.new(emission.outputs["Emission"], mix.inputs[1])
    links.new(nodes.new("ShaderNodeHoldout").outputs["Holdout"], mix.inputs[2])
    links.new(mix.outputs["Shader"], nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    return material


@dataclass(frozen=True)
class Surface:
    """What one surface id stands for: an object, and the material on those of its faces."""

    object: bpy.types.Object
    material: bpy.types.Material | None


def _surfaces_of(obj):
    return [Surface(obj, slot.material) for slot in obj.material_slots] or [Surface(obj, None)]


@contextmanager
def _surface_ids():
    """Number every (object, material slot) with temporary custom properties; yields the list
    whose index is the id. Id 0 is a surface without id (a linked object: read-only)."""
    surfaces, numbered = [None], []
    try:
        for obj in bpy.data.objects:
            if obj.library is not None:
                continue
            obj_surfaces = _surfaces_of(obj)
            obj[SURFACE_ID_PROPERTY], obj[LAST_SLOT_PROPERTY] = len(surfaces), len(obj_surfaces) - 1
            numbered.append(obj)
            surfaces += obj_surfaces
        if len(surfaces) > MAX_SURFACE_IDS:
            raise PassError(f"the file has {len(surfaces)} object material slots; passes handle {MAX_SURFACE_IDS}")
        yield surfaces
    finally:
        for obj in numbered:
            del obj[SURFACE_ID_PROPERTY], obj[LAST_SLOT_PROPERTY]


def read_image(path):
    """(H, W, 4) float32, top row first; 8-bit files come back as byte / 255."""
    image = bpy.data.images.load(path)
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(height, width, 4)[::-1]


def _render_to_file(scene, settings, path, **render_arguments):
    with temporarily_set(settings):
        bpy.ops.render.render(write_still=True, scene=scene.name, **render_arguments)
    return read_image(path)


def _render_view_layer(scene):
    return bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]


class GeometryRender:
    """The geometry render, decoded on demand (see the module doc)."""

    def __init__(self, rgba, surfaces, camera_rotation):
        self.rgba, self.surfaces, self.camera_rotation = rgba, surfaces, camera_rotation

    @cached_property
    def hits(self):
        return self.rgba[:, :, 3] > 0.0

    @cached_property
    def _values(self):
        """Depth and normal angles, with the premultiplying alpha divided out."""
        return self.rgba[:, :, :3] / np.where(self.hits, self.rgba[:, :, 3], 1.0)[:, :, None]

    @cached_property
    def distance(self):
        """Camera distance (View Z); 1e10, Blender's 'nothing hit', where nothing was hit."""
        return np.where(self.hits, self._values[:, :, 0], np.float32(BACKGROUND_DISTANCE * 10.0))

    @cached_property
    def world_normals(self):
        """World-space unit normals; zero vectors where nothing was hit."""
        normals = normals_from_angles(self._values[:, :, 1], self._values[:, :, 2])
        normals[~self.hits] = 0.0
        return normals

    @cached_property
    def surface_ids(self):
        """Index into surfaces per pixel; −1 where nothing was hit."""
        fraction = 1.0 - self.rgba[:, :, 3].astype(np.float64) - _ID_ALPHA_OFFSET
        return np.where(self.hits, np.round(fraction / _ID_ALPHA_STEP).astype(np.int64), -1)


def _camera_rotation(scene, view_layer):
    """The camera's world rotation, evaluated (parents, constraints, drivers) where the view
    layer has a depsgraph: a scene that is not the window's has none until it is shown."""
    camera, depsgraph = scene.camera, view_layer.depsgraph
    if depsgraph is not None:
        depsgraph.update()
        camera = camera.evaluated_get(depsgraph)
    return np.array(camera.matrix_world.to_quaternion().to_matrix())


def render_geometry(scene, width, height):
    """One Cycles render of the geometry values, decoded (see the module doc)."""
    view_layer = _render_view_layer(scene)
    material = _geometry_material()
    try:
        with tempfile.TemporaryDirectory(prefix="sd_blender_passes_") as folder, _surface_ids() as surfaces:
            exr_path = os.path.join(folder, "geometry.exr")
            settings = _geometry_render_settings(scene, view_layer, material, width, height, exr_path)
            rgba = _render_to_file(scene, settings, exr_path, layer=view_layer.name)
    finally:
        bpy.data.materials.remove(material)
    return GeometryRender(rgba, surfaces, _camera_rotation(scene, view_layer))


def render_beauty(scene, width, height):
    """(H, W, 3) uint8: the scene rendered with its own engine and settings at the asked size."""
    with tempfile.TemporaryDirectory(prefix="sd_blender_passes_") as folder:
        png_path = os.path.join(folder, "color.png")
        rgba = _render_to_file(scene, _beauty_render_settings(scene, width, height, png_path), png_path)
    return np.round(rgba[:, :, :3] * 255.0).astype(np.uint8)


def _is_rigged(obj):
    parent_is_armature = obj.parent is not None and obj.parent.type == "ARMATURE"
    return parent_is_armature or any(modifier.type == "ARMATURE" for modifier in obj.modifiers)


def _surface_class(surface):
    """ADE20K class index of a surface (core.segmentation's rules); PassError for a bad override."""
    obj, material = surface.object, surface.material
    try:
        return resolve_class(
            obj.name,
            material.name if material else "",
            getattr(obj, "sd_blender_seg_class", ""),
            getattr(material, "sd_blender_seg_class", "") if material else "",
            _is_rigged(obj),
        )
    except ValueError as error:
        raise PassError(f'segmentation class of object "{obj.name}": {error}') from None


def _per_surface(geometry, value_of, background):
    """Map each pixel's surface id through value_of(surface); background where nothing was hit.
    Id 0 (an object without id) goes through value_of(None)."""
    ids, inverse = np.unique(geometry.surface_ids, return_inverse=True)
    values = np.array([background if i < 0 else value_of(geometry.surfaces[i]) for i in ids])
    return values[inverse].reshape(geometry.surface_ids.shape)


def _object_labels(geometry):
    """An integer per object (its first surface id), −1 for background, for object boundaries."""
    first_ids = {}
    for surface_id, surface in enumerate(geometry.surfaces):
        first_ids.setdefault(surface and surface.object.name, surface_id)
    return _per_surface(geometry, lambda surface: first_ids[surface and surface.object.name], -1)


def _seg_buffer(geometry):
    return _per_surface(geometry, lambda surface: _surface_class(surface) if surface else resolve_class(""), -1)


def _lines_buffer(geometry, thin):
    return edge_strength(geometry.distance, geometry.world_normals, _object_labels(geometry), thin=thin)


# kind → (geometry render → float buffer)
_GEOMETRY_BUFFERS = {
    "depth": lambda geometry: geometry.distance,
    "normal": lambda geometry: camera_space_normals(geometry.world_normals, geometry.camera_rotation),
    "lineart": lambda geometry: _lines_buffer(geometry, thin=False),
    "canny": lambda geometry: _lines_buffer(geometry, thin=True),
    "seg": _seg_buffer,
}
GEOMETRY_KINDS = tuple(_GEOMETRY_BUFFERS)


def _check(scene, kinds):
    unknown = [kind for kind in kinds if kind not in PASS_KINDS]
    if unknown:
        raise PassError(f"unknown pass {', '.join(unknown)}; available: {', '.join(PASS_KINDS)}")
    if scene.camera is None:
        raise PassError("the scene has no active camera: add one and set it as the scene camera")


def render_pass_buffers(scene, kinds, width, height):
    """Render the scene and return {kind: buffer}: camera distances for depth, camera-space unit
    normals for normal, edge strength for lineart and canny, ADE20K class indices (−1 for
    background) for seg, 8-bit RGB for color. At most two renders: geometry and beauty."""
    _check(scene, kinds)
    if "openpose" in kinds:
        raise PassError("openpose is drawn from the armatures, not rendered: use render_control_images")
    buffers = {}
    if any(kind in GEOMETRY_KINDS for kind in kinds):
        geometry = render_geometry(scene, width, height)
        buffers.update({kind: _GEOMETRY_BUFFERS[kind](geometry) for kind in kinds if kind in GEOMETRY_KINDS})
    if "color" in kinds:
        buffers["color"] = render_beauty(scene, width, height)
    return buffers


def openpose_image(scene, width, height, options):
    """The OpenPose skeletons of the scene's armatures, drawn like the reference annotator."""
    return draw_openpose(scene_people(scene, width, height), width, height, options.openpose_stick_scale)


def _depth_image(distance, options):
    return inverse_depth_image(distance, *(options.depth_range or ()))


# kind → (buffer, options → 8-bit control image in the convention of the public ControlNets)
_TO_CONTROL_IMAGE = {
    "depth": _depth_image,
    "normal": lambda normals, options: normal_image(normals),
    "lineart": lambda strength, options: line_image(strength, options.lineart_threshold),
    "canny": lambda strength, options: line_image(strength, options.canny_threshold),
    "seg": lambda classes, options: segmentation_image(classes),
    "color": lambda pixels, options: pixels,
}


def render_control_images(scene, kinds, width, height, options=None):
    """{kind: uint8 image, top row first}, ready to send, in the order of kinds."""
    options = options or PassOptions()
    _check(scene, kinds)
    buffers = render_pass_buffers(scene, [kind for kind in kinds if kind != "openpose"], width, height)
    images = {kind: _TO_CONTROL_IMAGE[kind](buffer, options) for kind, buffer in buffers.items()}
    if "openpose" in kinds:
        images["openpose"] = openpose_image(scene, width, height, options)
    return {kind: images[kind] for kind in kinds}


def show_in_blender(kind, pixels):
    """An image datablock named "SD <kind>" holding the pass, for preview in the Image Editor."""
    return image_of_pixels(f"SD {kind}", pixels, "Non-Color")


def image_of_pixels(name, pixels, colorspace):
    """The image datablock `name`, made or resized to hold these 8-bit pixels ((H, W) or (H, W, C),
    top row first) in the Image Editor."""
    height, width = pixels.shape[:2]
    image = bpy.data.images.get(name)
    if image is None or tuple(image.size) != (width, height):
        if image is not None:
            bpy.data.images.remove(image)
        image = bpy.data.images.new(name, width, height)
        image.colorspace_settings.name = colorspace
    rgb = pixels[:, :, :3] if pixels.ndim == 3 else np.repeat(pixels[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb[::-1], np.full((height, width, 1), 255, np.uint8)], axis=2)
    image.pixels.foreach_set((rgba.astype(np.float32) / 255.0).ravel())
    image.update()
    return image
