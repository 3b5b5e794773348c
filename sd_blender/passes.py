"""Render control passes from the scene: exact float buffers from Cycles.

Each pass is one Cycles render with a material override whose emission is the quantity wanted
(camera depth for the depth pass), 1 sample and a pixel filter narrower than a pixel, so every
pixel holds the exact value at its centre. The result goes through a 32-bit float EXR. The user's
render settings are changed only for the duration of the render and are put back afterwards.
"""
import os
import tempfile
from contextlib import contextmanager

import bpy
import numpy as np

from .core.depth import BACKGROUND_DISTANCE, inverse_depth_image

PASS_KINDS = ("depth",)

# Float buffer → 8-bit control image in the convention of the public ControlNets.
_TO_CONTROL_IMAGE = {"depth": inverse_depth_image}


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


def _float_exr_settings(image_settings):
    """32-bit RGBA EXR. Blender 5.0 added media_type, which must be set first."""
    media_type = [(image_settings, "media_type", "IMAGE")] if hasattr(image_settings, "media_type") else []
    return media_type + [
        (image_settings, "file_format", "OPEN_EXR"),
        (image_settings, "color_mode", "RGBA"),
        (image_settings, "color_depth", "32"),
    ]


def _render_settings(scene, view_layer, material, width, height, exr_path):
    render, cycles = scene.render, scene.cycles
    return [
        (render, "engine", "CYCLES"),
        (cycles, "samples", 1),
        (cycles, "use_adaptive_sampling", False),
        (cycles, "use_denoising", False),
        (cycles, "filter_width", 0.01),
        (render, "film_transparent", True),
        (render, "resolution_x", width),
        (render, "resolution_y", height),
        (render, "resolution_percentage", 100),
        (render, "pixel_aspect_x", 1.0),
        (render, "pixel_aspect_y", 1.0),
        (render, "use_border", False),
        (render, "use_multiview", False),
        (render, "use_compositing", False),
        (render, "use_sequencer", False),
        (render, "use_single_layer", True),
        (render, "filepath", exr_path),
        (view_layer, "material_override", material),
    ] + _float_exr_settings(render.image_settings)


def _emission_material(name, link_value):
    """A temporary material emitting, unlit, the value that link_value(nodes) returns."""
    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # node trees are always on from 5.0, and use_nodes is deprecated
        material.use_nodes = True
    nodes = material.node_tree.nodes
    nodes.clear()
    emission = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    material.node_tree.links.new(link_value(nodes), emission.inputs["Color"])
    material.node_tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def _depth_material():
    return _emission_material("SD depth pass", lambda nodes: nodes.new("ShaderNodeCameraData").outputs["View Z Depth"])


def _read_exr(path):
    """(H, W, 4) float32, top row first."""
    image = bpy.data.images.load(path)
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(height, width, 4)[::-1]


def _render_with_material(scene, material, width, height):
    view_layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
    with tempfile.TemporaryDirectory(prefix="sd_blender_passes_") as folder:
        exr_path = os.path.join(folder, "pass.exr")
        with temporarily_set(_render_settings(scene, view_layer, material, width, height, exr_path)):
            bpy.ops.render.render(write_still=True, layer=view_layer.name, scene=scene.name)
        return _read_exr(exr_path)


def _distance_buffer(rgba):
    """Camera depth per pixel; 1e10 (Blender's 'nothing hit') where the film stayed transparent."""
    return np.where(rgba[:, :, 3] > 0.0, rgba[:, :, 0], BACKGROUND_DISTANCE * 10.0)


# kind → (override material builder, rendered RGBA → float buffer)
_PASSES = {"depth": (_depth_material, _distance_buffer)}


def render_pass_buffers(scene, kinds, width, height):
    """Render the scene and return {kind: float buffer} in Blender units."""
    unknown = [kind for kind in kinds if kind not in _PASSES]
    if unknown:
        raise PassError(f"unknown pass {', '.join(unknown)}; available: {', '.join(PASS_KINDS)}")
    if scene.camera is None:
        raise PassError("the scene has no active camera: add one and set it as the scene camera")
    buffers = {}
    for kind in kinds:
        build_material, to_buffer = _PASSES[kind]
        material = build_material()
        try:
            buffers[kind] = to_buffer(_render_with_material(scene, material, width, height))
        finally:
            bpy.data.materials.remove(material)
    return buffers


def render_control_images(scene, kinds, width, height):
    """{kind: uint8 image, top row first}, ready to send."""
    buffers = render_pass_buffers(scene, kinds, width, height)
    return {kind: _TO_CONTROL_IMAGE[kind](buffer) for kind, buffer in buffers.items()}


def show_in_blender(kind, pixels):
    """An image datablock named "SD <kind>" holding the pass, for preview in the Image Editor."""
    height, width = pixels.shape[:2]
    name = f"SD {kind}"
    image = bpy.data.images.get(name)
    if image is None or tuple(image.size) != (width, height):
        if image is not None:
            bpy.data.images.remove(image)
        image = bpy.data.images.new(name, width, height)
        image.colorspace_settings.name = "Non-Color"
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb[::-1], np.full((height, width, 1), 255, np.uint8)], axis=2)
    image.pixels.foreach_set((rgba.astype(np.float32) / 255.0).ravel())
    image.update()
    return image
