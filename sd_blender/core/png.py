"""A minimal PNG encoder, so the core can write control images without Pillow or bpy."""
import struct
import zlib

import numpy as np

from .files import write_whole

_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels → PNG colour type (gray, RGB, RGBA)
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_END = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))  # a PNG's last 12 bytes


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(pixels):
    """Encode an 8-bit image, (H, W) or (H, W, 1|3|4), top row first, as PNG bytes."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"PNG pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    if channels not in _COLOR_TYPES:
        raise ValueError(f"PNG pixels need 1, 3 or 4 channels, got {channels}")
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)
    return b"".join((
        _SIGNATURE,
        _chunk(b"IHDR", header),
        _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
        _chunk(b"IEND", b""),
    ))


def write_png(path, pixels):
    write_whole(path, encode_png(pixels))


def is_whole_png(path):
    """Whether path is a PNG file that ends where a PNG ends (not cut off by a crash or a full
    disk); reads 20 bytes, not the image."""
    try:
        with open(path, "rb") as file:
            start = file.read(len(_SIGNATURE))
            if file.seek(0, 2) < len(_SIGNATURE) + len(_END):
                return False
            file.seek(-len(_END), 2)
            return start == _SIGNATURE and file.read() == _END
    except OSError:
        return False
