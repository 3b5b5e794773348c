"""Image files in and out: base64 PNG/JPEG input, PNG output with the generation parameters."""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json

from PIL import Image, PngImagePlugin, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG")
# The most pixels an input image may decode to (checked from the file header, before decoding),
# so a small file that decodes to gigabytes (a decompression bomb) is refused. The CLI sets it
# to 4 x --max-pixels.
MAX_INPUT_PIXELS = 4 * 2048 * 2048


def set_max_input_pixels(pixels: int) -> None:
    global MAX_INPUT_PIXELS
    MAX_INPUT_PIXELS = pixels
    # PIL's own guard (an error at twice its limit) stays behind ours.
    Image.MAX_IMAGE_PIXELS = pixels


set_max_input_pixels(MAX_INPUT_PIXELS)

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
        _check_size(*image.size)
        image.load()
        return image.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError("is not a PNG or JPEG file") from None
    except Image.DecompressionBombError:  # PIL's guard in Image.open, at twice the limit
        raise ValueError(
            f"decodes to more than {2 * MAX_INPUT_PIXELS} pixels; this server decodes images of at most "
            f"{MAX_INPUT_PIXELS} pixels"
        ) from None
    except ValueError:
        raise
    except Exception as error:  # PIL raises many types for truncated or corrupt files
        raise ValueError(f"is not a readable PNG or JPEG file ({error})") from None


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_INPUT_PIXELS:
        raise ValueError(
            f"is {width}x{height} pixels ({width * height}); this server decodes images of at most "
            f"{MAX_INPUT_PIXELS} pixels"
        )


def a1111_model_hash(path: str) -> str:
    """AUTOMATIC1111's "Model hash" of a checkpoint file (its AutoV2 hash): the first 10 hex
    digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:10]


def a1111_lora_hash(path: str) -> str:
    """AUTOMATIC1111's short hash of a LoRA file (as in "Lora hashes"): the first 12 hex digits of
    the SHA-256 of the tensors, the safetensors header left out."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        file.seek(8 + int.from_bytes(file.read(8), "little"))
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def a1111_parameters(parameters: dict, seed: int) -> str:
    """The `parameters` text chunk as AUTOMATIC1111 writes it, so other tools can read it: LoRAs
    as `<lora:name:weight>` in the prompt, the negative prompt's line only when there is one."""
    loras = parameters.get("loras", [])
    prompt = " ".join([parameters["prompt"], *(f"<lora:{lora['name']}:{lora['weight']}>" for lora in loras)])
    lines = [prompt.strip()]
    if parameters["negative_prompt"]:
        lines.append(f"Negative prompt: {parameters['negative_prompt']}")
    fields = [
        f"Steps: {parameters['steps']}",
        f"Sampler: {SAMPLER_NAMES[parameters['scheduler']]}",
        f"CFG scale: {parameters['guidance_scale']}",
        f"Seed: {seed}",
        f"Size: {parameters['width']}x{parameters['height']}",
        *([f"Model hash: {parameters['model_hash']}"] if "model_hash" in parameters else []),
        f"Model: {parameters['model']}",
    ]
    if "strength" in parameters:
        fields.append(f"Denoising strength: {parameters['strength']}")
    if parameters.get("lora_hashes"):
        fields.append('Lora hashes: "' + ", ".join(f"{n}: {h}" for n, h in parameters["lora_hashes"].items()) + '"')
    for index, control in enumerate(parameters["controls"]):
        fields.append(
            f'ControlNet {index}: "Module: {control["type"]}, Model: {control["model"]}, '
            f'Weight: {control["weight"]}, Guidance Start: {control["start"]}, Guidance End: {control["end"]}"'
        )
    return "\n".join([*lines, ", ".join(fields)])


def encode_png(image: Image.Image, parameters: dict, index: int) -> bytes:
    """Image `index` of a job as PNG, with `parameters` (A1111 text) and `sd_blender` (JSON) chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_parameters(parameters, parameters["seeds"][index]))
    info.add_text("sd_blender", json.dumps({**parameters, "image_index": index}))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
