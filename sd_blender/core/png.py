"""A minimal PNG encoder and decoder, so the core can write control images and read frames back
without Pillow or bpy."""
import base64
import struct
import zlib

import numpy as np

from .files import write_whole

_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels → PNG colour type (gray, RGB, RGBA)
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type → channels (gray, RGB, gray + alpha, RGBA)
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


def png_base64(pixels):
    """An image as a base64 PNG, as the server's image fields take it."""
    return base64.b64encode(encode_png(pixels)).decode("ascii")


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


def _chunks(data, name):
    if data[:len(_SIGNATURE)] != _SIGNATURE:
        raise ValueError(f"{name}: not a PNG file")
    position = len(_SIGNATURE)
    while position + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        yield kind, data[position + 8:position + 8 + size]
        if kind == b"IEND":
            return
        position += 12 + size
    raise ValueError(f"{name}: the PNG ends before its IEND chunk (cut off?)")


def _predictions(kinds, left, up, up_left):
    """What each PNG filter type predicts from a pixel's decoded neighbours (int16 arrays)."""
    paeth_left = np.abs(up - up_left)  # |estimate − left| with estimate = left + up − up_left
    paeth_up = np.abs(left - up_left)
    paeth_up_left = np.abs(left + up - 2 * up_left)
    paeth = np.where((paeth_left <= paeth_up) & (paeth_left <= paeth_up_left), left,
                     np.where(paeth_up <= paeth_up_left, up, up_left))
    kinds = kinds[:, None]
    return np.select([kinds == 1, kinds == 2, kinds == 3, kinds == 4], [left, up, (left + up) >> 1, paeth], 0)


def _unfilter(filtered, kinds, channels):
    """The pixels from the filtered scanlines. A pixel depends on its decoded left, upper and
    upper-left neighbours, so the pixels of one anti-diagonal (x + y constant) are decoded
    together, all filter types at once, which keeps the loop at H + W − 1 steps."""
    height, width = filtered.shape[0], filtered.shape[1] // channels
    if not kinds.any():  # unfiltered, as encode_png writes: nothing to undo
        return filtered.reshape(height, width, channels)
    filtered = filtered.reshape(height, width, channels).astype(np.int16)
    decoded = np.zeros((height + 1, width + 1, channels), np.int16)  # a zero row and column before the image
    for diagonal in range(height + width - 1):
        y = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        x = diagonal - y
        guess = _predictions(kinds[y], decoded[y + 1, x], decoded[y, x + 1], decoded[y, x])
        decoded[y + 1, x + 1] = (filtered[y, x] + guess) & 0xFF
    return decoded[1:, 1:].astype(np.uint8)


def decode_png(data, name="PNG"):
    """The pixels of an 8-bit, non-interlaced PNG (gray, gray + alpha, RGB or RGBA): (H, W) for
    gray, else (H, W, C), uint8. name is what errors call the file."""
    header, compressed = None, []
    for kind, body in _chunks(data, name):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.append(body)
    if header is None:
        raise ValueError(f"{name}: the PNG has no IHDR chunk")
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in _CHANNELS or interlace:
        raise ValueError(f"{name}: only 8-bit non-interlaced gray, RGB(A) PNGs are read "
                         f"(bit depth {depth}, colour type {colour_type}, interlace {interlace})")
    channels = _CHANNELS[colour_type]
    stride = width * channels
    try:
        filtered = np.frombuffer(zlib.decompress(b"".join(compressed)), np.uint8)
    except zlib.error as error:
        raise ValueError(f"{name}: the PNG's image data does not decompress ({error})") from None
    if filtered.size != height * (stride + 1):
        raise ValueError(f"{name}: the PNG's image data has {filtered.size} bytes, not {height * (stride + 1)}")
    filtered = filtered.reshape(height, stride + 1)
    kinds = filtered[:, 0]
    if (kinds > 4).any():
        raise ValueError(f"{name}: scanline {int(np.argmax(kinds > 4))} has an unknown filter type")
    pixels = _unfilter(filtered[:, 1:], kinds, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def read_png(path):
    with open(path, "rb") as file:
        return decode_png(file.read(), str(path))
