"""Render control passes from the scene: one Cycles render, read back as exact float buffers.

The render uses 1 sample with a pixel filter narrower than a pixel, so every pixel is the exact
value at its centre. The user's render settings are changed only for the duration of the render
and are put back afterwards.
"""
import os
import sys
import tempfile
from contextlib import contextmanager

import bpy
import numpy as np

from .core.depth import inverse_depth_image

PASS_KINDS = ("depth",)

# Float buffer → 8-bit control image in the convention of the public ControlNets.
_TO_CONTROL_IMAGE = {"depth": inverse_depth_image}

# Which view-layer pass each kind needs, and its channel suffix in the multilayer EXR.
_VIEW_LAYER_PASSES = {"depth": ("use_pass_z", ".Depth.Z")}


class PassError(Exception):
    """The scene cannot be rendered into passes; the message says what to fix."""


def _openimageio():
    try:
        import OpenImageIO
    except ImportError:
        # Blender puts its bundled packages on sys.path; the bpy module from PyPI does not.
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        sys.path.append(os.path.join(bpy.utils.resource_path("LOCAL"), "python", "lib", version, "site-packages"))
        import OpenImageIO
    return OpenImageIO


@contextmanager
def temporarily_set(settings):
    """Set (owner, attribute, value) triples, restoring the old values afterwards.

    Restored in the order given: image_settings.file_format must come back before its
    color_depth, which the file format constrains.
    """
    saved = [(owner, attribute, getattr(owner, attribute)) for owner, attribute, _ in settings]
    try:
        for owner, attribute, value in settings:
            setattr(owner, attribute, value)
        yield
    finally:
        for owner, attribute, value in saved:
            setattr(owner, attribute, value)


def _render_settings(scene, view_layer, kinds, width, height, exr_path):
    render, cycles = scene.render, scene.cycles
    settings = [
        (render, "engine", "CYCLES"),
        (cycles, "samples", 1),
        (cycles, "use_adaptive_sampling", False),
        (cycles, "use_denoising", False),
        (cycles, "filter_width", 0.01),
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
        (render.image_settings, "file_format", "OPEN_EXR_MULTILAYER"),
        (render.image_settings, "color_depth", "32"),
    ]
    settings += [(view_layer, _VIEW_LAYER_PASSES[kind][0], True) for kind in kinds]
    return settings


def _read_exr_channels(path, suffixes):
    """{suffix: (H, W) float32, top row first} for the channels ending in each suffix."""
    oiio = _openimageio()
    image = oiio.ImageInput.open(path)
    if image is None:
        raise PassError(f"Blender wrote no readable pass file at {path}")
    try:
        names = list(image.spec().channelnames)
        pixels = image.read_image(oiio.FLOAT)
    finally:
        image.close()
    channels = {}
    for suffix in suffixes:
        matches = [index for index, name in enumerate(names) if name.endswith(suffix)]
        if not matches:
            raise PassError(f"the render has no {suffix.strip('.')} channel (channels: {', '.join(names)})")
        channels[suffix] = pixels[:, :, matches[0]]
    return channels


def render_pass_buffers(scene, kinds, width, height):
    """Render the scene once and return {kind: float buffer} in Blender units."""
    unknown = [kind for kind in kinds if kind not in _VIEW_LAYER_PASSES]
    if unknown:
        raise PassError(f"unknown pass {', '.join(unknown)}; available: {', '.join(PASS_KINDS)}")
    if scene.camera is None:
        raise PassError("the scene has no active camera: add one and set it as the scene camera")
    view_layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
    with tempfile.TemporaryDirectory(prefix="sd_blender_passes_") as folder:
        exr_path = os.path.join(folder, "passes.exr")
        with temporarily_set(_render_settings(scene, view_layer, kinds, width, height, exr_path)):
            bpy.ops.render.render(write_still=True, layer=view_layer.name, scene=scene.name)
        suffixes = {kind: _VIEW_LAYER_PASSES[kind][1] for kind in kinds}
        channels = _read_exr_channels(exr_path, suffixes.values())
    return {kind: channels[suffix] for kind, suffix in suffixes.items()}


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
