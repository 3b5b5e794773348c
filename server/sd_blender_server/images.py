"""Image files in and out: base64 PNG/JPEG input, PNG output with the generation parameters."""
from __future__ import annotations

import base64
import binascii
import io
import json

from PIL import Image, PngImagePlugin, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG")

SAMPLER_NAMES = {
    "unipc": "UniPC",
    "euler_a": "Euler a",
    "euler": "Euler",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "pndm": "PLMS",
    "lms": "LMS",
    "heun": "Heun",
}


def decode_base64_image(value: object) -> Image.Image:
    """A base64 PNG or JPEG file (a `data:` URL prefix is allowed) as an RGB image."""
    if isinstance(value, Image.Image):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a base64 string of a PNG or JPEG file")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(data))
        image_format = image.format
        if image_format not in ACCEPTED_FORMATS:
            raise ValueError(f"is a {image_format or 'unknown'} file; send PNG or JPEG")
        image.load()
    except UnidentifiedImageError:
        raise ValueError("is not a PNG or JPEG file") from None
    except ValueError:
        raise
    except Exception as error:  # PIL raises many types for truncated or corrupt files
        raise ValueError(f"is not a readable PNG or JPEG file ({error})") from None
    return image.convert("RGB")


def a1111_parameters(parameters: dict, seed: int) -> str:
    """The `parameters` text chunk as AUTOMATIC1111 writes it, so other tools can read it."""
    fields = [
        f"Steps: {parameters['steps']}",
        f"Sampler: {SAMPLER_NAMES[parameters['scheduler']]}",
        f"CFG scale: {parameters['guidance_scale']}",
        f"Seed: {seed}",
        f"Size: {parameters['width']}x{parameters['height']}",
        f"Model: {parameters['model']}",
    ]
    if "strength" in parameters:
        fields.append(f"Denoising strength: {parameters['strength']}")
    for index, control in enumerate(parameters["controls"]):
        fields.append(
            f'ControlNet {index}: "Module: {control["type"]}, Model: {control["model"]}, '
            f'Weight: {control["weight"]}, Guidance Start: {control["start"]}, Guidance End: {control["end"]}"'
        )
    return f"{parameters['prompt']}\nNegative prompt: {parameters['negative_prompt']}\n" + ", ".join(fields)


def encode_png(image: Image.Image, parameters: dict, index: int) -> bytes:
    """Image `index` of a job as PNG, with `parameters` (A1111 text) and `sd_blender` (JSON) chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_parameters(parameters, parameters["seeds"][index]))
    info.add_text("sd_blender", json.dumps({**parameters, "image_index": index}))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
