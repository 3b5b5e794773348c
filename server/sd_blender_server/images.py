"""Image files in and out: base64 PNG/JPEG input, PNG output with the generation parameters."""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import struct
import zlib

import numpy as np
from PIL import Image

from .schedulers import SCHEDULERS

ACCEPTED_FORMATS = ("PNG", "JPEG")


ACCEPTED_MASK_MODES = ("1", "L", "LA", "RGB", "RGBA")


def decode_base64_image(value: object, max_pixels: int) -> Image.Image:
    """A base64 PNG or JPEG file (a `data:` URL prefix is allowed) as an RGB image. Its size is read
    from the file's header and checked against `max_pixels` before anything is decoded, so a small
    file that would decode to gigabytes (a decompression bomb) is refused at once."""
    image = _decoded(value, max_pixels)
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_base64_mask(value: object, max_pixels: int) -> Image.Image:
    """A base64 PNG or JPEG mask as an 8-bit grayscale (L) image, checked as decode_base64_image
    checks images. Black and white (1), grayscale (L, LA) and colour (RGB, RGBA) files are accepted
    and converted to grayscale, alpha ignored; palette, 16-bit and CMYK files are refused."""
    image = _decoded(value, max_pixels)
    if image.mode not in ACCEPTED_MASK_MODES:
        raise ValueError(
            f"is a mode {image.mode} image; a mask must be black and white, 8-bit grayscale, RGB or RGBA "
            "(white repaints, black keeps)"
        )
    return image.convert("L")


def _decoded(value: object, max_pixels: int) -> Image.Image:
    """A base64 PNG or JPEG file decoded in its own mode, its size checked from its header first."""
    if not isinstance(value, str):
        raise ValueError("must be a base64 string of a PNG or JPEG file")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    image = _open_header(data)
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(
            f"is {width}x{height} pixels ({width * height}); this server decodes images of at most {max_pixels} pixels"
        )
    try:
        image.load()
        return image
    except Exception as error:  # PIL raises many types for truncated or corrupt files
        raise ValueError(f"is not a readable PNG or JPEG file ({error})") from None


def _open_header(data: bytes) -> Image.Image:
    """A PNG or JPEG file with only its header read. Opened by its format's own class: Image.open
    would apply PIL's process-wide pixel limit, which this server leaves as it is."""
    Image.preinit()
    for image_format in ACCEPTED_FORMATS:
        factory, accept = Image.OPEN[image_format]
        if accept is None or accept(data[:16]):
            try:
                return factory(io.BytesIO(data), None)
            except Exception as error:
                raise ValueError(f"is not a readable PNG or JPEG file ({error})") from None
    try:
        other = Image.open(io.BytesIO(data)).format
    except Exception:  # not an image PIL knows, or one past PIL's own limit
        raise ValueError("is not a PNG or JPEG file") from None
    raise ValueError(f"is a {other or 'unknown'} file; send PNG or JPEG")


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
        f"Sampler: {SCHEDULERS[parameters['scheduler']].a1111_name}",
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


def encode_png(image: Image.Image, parameters: dict, index: int, compress_level: int) -> bytes:
    """Image `index` of a job as PNG, with `parameters` (A1111 text) and `sd_blender` (JSON) chunks."""
    texts = {
        "parameters": a1111_parameters(parameters, parameters["seeds"][index]),
        "sd_blender": json.dumps({**parameters, "image_index": index}),
    }
    return png_file(image, texts, compress_level)


def encode_preview(image: Image.Image, compress_level: int) -> bytes:
    """A live preview as PNG, as it is sent (no metadata: it is not a result)."""
    return png_file(image, {}, compress_level)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}
_STORED_BLOCK = 65535  # the most bytes a stored deflate block holds


def png_file(image: Image.Image, texts: dict[str, str], compress_level: int) -> bytes:
    """An 8-bit PNG of `image` with text chunks, its rows unfiltered and deflated at `compress_level`
    (0: stored). Written here rather than by Pillow, whose adaptive row filters cost about 20 ms for
    a 512x512 image on a small CPU even at level 0, where this takes about 1 ms: the file is put
    together from its parts in one copy."""
    if image.mode not in _PNG_COLOR_TYPES:
        image = image.convert("RGB")
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + pixels[0].size), np.uint8)  # each row: filter type 0 (none), then its bytes
    rows[:, 1:] = pixels.reshape(height, -1)
    raw = memoryview(rows).cast("B")
    image_data = _zlib_stored(raw) if compress_level == 0 else (zlib.compress(raw, compress_level),)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[image.mode], 0, 0, 0)
    return b"".join((
        _PNG_SIGNATURE,
        *_png_chunk(b"IHDR", (header,)),
        *(part for keyword, text in texts.items() for part in _text_chunk(keyword, text)),
        *_png_chunk(b"IDAT", image_data),
        *_png_chunk(b"IEND", ()),
    ))


def _zlib_stored(data: memoryview) -> list:
    """`data` as a zlib stream of stored (uncompressed) deflate blocks, in parts that point into it:
    what zlib.compress(data, 0) gives, without its copy."""
    parts = [b"\x78\x01"]
    for start in range(0, max(len(data), 1), _STORED_BLOCK):
        block = data[start:start + _STORED_BLOCK]
        final = start + _STORED_BLOCK >= len(data)
        parts += (struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF), block)
    parts.append(struct.pack(">I", zlib.adler32(data)))
    return parts


def _text_chunk(keyword: str, text: str) -> tuple:
    """tEXt when the text is Latin-1 (what A1111 and most readers expect), else iTXt in UTF-8."""
    try:
        return _png_chunk(b"tEXt", (keyword.encode("latin-1") + b"\0" + text.encode("latin-1"),))
    except UnicodeEncodeError:
        return _png_chunk(b"iTXt", (keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"),))


def _png_chunk(kind: bytes, data: tuple | list) -> tuple:
    """A chunk as the parts of the file it adds: its length, kind, `data` (in parts) and CRC."""
    crc = zlib.crc32(kind)
    for part in data:
        crc = zlib.crc32(part, crc)
    return (struct.pack(">I", sum(len(part) for part in data)), kind, *data, struct.pack(">I", crc))
