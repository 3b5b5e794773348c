"""Views fused and baked into UV textures, saved, shown on the objects, and reported
(docs/texturing.md): the part `texture` and `bake` share."""
import json
import os
from dataclasses import dataclass

import bpy
import numpy as np

from ..core import fusion
from ..core.files import write_whole
from ..core.png import write_png
from .apply import apply_as_baked_texture, load_image


# Rings of texels around the islands filled by dilation (then all the rest by push-pull).
DILATION_AT_2048 = 16


@dataclass(frozen=True)
class FusionOptions:
    """How views are weighted per texel: cos^exponent, nothing past discard_angle (degrees)."""

    exponent: float = 3.0
    discard_angle: float = 75.0


@dataclass
class BakedTexture:
    """A target's fused texture (size × size × 3, 0–1, filled everywhere), how much of its
    surface the views saw, and how well each view agrees with it."""

    target: object  # texels.Target
    pixels: np.ndarray
    coverage: float
    agreement: list  # per view: 0–255, None where the view does not see the target


def bake(targets, views, images, options=FusionOptions()):
    """Fuse `images` (H, W, 3 floats in 0–1, one per view of `views`: texels.SeenView) into each
    target's texture, with its coverage and each view's agreement with it."""
    baked = []
    for index, target in enumerate(targets):
        pixels, fused = _fused_texture(target, index, views, images, options)
        agreement = [
            fusion.view_agreement(
                image, fusion.render_into_view(pixels, view.maps[index]),
                view.maps[index].weights(options.exponent, options.discard_angle),
            )
            for image, view in zip(images, views)
        ]
        baked.append(BakedTexture(target, pixels, fusion.coverage(target.surface, fused.seen), agreement))
    return baked


def fused_textures(targets, views, images, options=FusionOptions()):
    """Each target's texture alone (as bake's, without measuring anything)."""
    return [_fused_texture(target, index, views, images, options)[0] for index, target in enumerate(targets)]


def _fused_texture(target, index, views, images, options):
    """The target's texture (size × size × 3, filled everywhere) and the fusion it came from."""
    samples = [view.samples[index] for view in views]
    weights = [view_samples.weights(options.exponent, options.discard_angle) for view_samples in samples]
    fused = fusion.fuse(images, samples, weights)
    surface = target.surface
    known = surface.image(fused.seen.astype(np.float32)) > 0
    filled = fusion.fill_unseen(surface.image(fused.colours), known, _dilation(surface.size))
    return np.clip(fusion.sized_up(filled, target.size), 0.0, 1.0), fused


def _dilation(size):
    """Rings of texels dilated at this fusion size: 16 at 2048, as many texels of the texture
    when it is sized up from a coarser fusion."""
    return max(DILATION_AT_2048 * size // 2048, 2)


def save_texture(baked, path):
    """The texture as an 8-bit RGB PNG."""
    write_png(path, np.round(baked.pixels * 255.0).astype(np.uint8))
    return path


def show_on_objects(baked, path):
    """The saved texture on each of the target's objects, read through the UV map baked into."""
    image = load_image(path)
    for name in baked.target.names:
        apply_as_baked_texture(bpy.data.objects[name], image, baked.target.uv_name)
    return image


def report_entries(baked, path):
    """What the JSON report says of the texture's objects: {object name: entry}."""
    measured = [value for value in baked.agreement if value is not None]
    entry = {
        "texture": os.path.abspath(path),
        "uv_map": baked.target.uv_name,
        "texture_size": baked.target.size,
        "coverage": round(baked.coverage, 6),
        "view_agreement": {
            "per_view": [None if value is None else round(value, 3) for value in baked.agreement],
            "mean": round(float(np.mean(measured)), 3) if measured else None,
        },
    }
    return {name: entry for name in baked.target.names}


def write_report(path, objects, **details):
    """The JSON report: per object its entry (report_entries), plus `details` (views, seconds...)."""
    write_whole(path, json.dumps({"objects": objects, **details}, indent=1).encode("utf-8"))
    return path
