"""A minimal OpenEXR writer and reader: single-part scanline images, numpy only.

Writes FLOAT channels with ZIP compression (zlib over blocks of 16 scanlines, after OpenEXR's
byte reordering and delta predictor); reads NONE, ZIPS and ZIP with HALF or FLOAT channels.
"""
import struct
import zlib

import numpy as np

from .files import write_whole

_MAGIC = struct.pack("<i", 20000630)
_VERSION = 2
_SINGLE_PART_SCANLINE_FLAGS = 0x400  # the only flag allowed: long attribute names
_COMPRESSIONS = {"NONE": 0, "ZIPS": 2, "ZIP": 3}
_LINES_PER_BLOCK = {0: 1, 2: 1, 3: 16}
_COMPRESSION_NAMES = {1: "RLE", 4: "PIZ", 5: "PXR24", 6: "B44", 7: "B44A", 8: "DWAA", 9: "DWAB"}
_PIXEL_TYPES = {1: np.dtype("<f2"), 2: np.dtype("<f4")}  # HALF, FLOAT
_FLOAT = 2


def _attribute(name, kind, value):
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def _channel_list(names):
    entries = b"".join(name.encode() + b"\0" + struct.pack("<iB3xii", _FLOAT, 0, 1, 1) for name in names)
    return entries + b"\0"


def _header(names, height, width):
    window = struct.pack("<4i", 0, 0, width - 1, height - 1)
    return b"".join((
        _attribute("channels", "chlist", _channel_list(names)),
        _attribute("compression", "compression", bytes([_COMPRESSIONS["ZIP"]])),
        _attribute("dataWindow", "box2i", window),
        _attribute("displayWindow", "box2i", window),
        _attribute("lineOrder", "lineOrder", b"\0"),  # increasing y
        _attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _attribute("screenWindowCenter", "v2f", struct.pack("<2f", 0.0, 0.0)),
        _attribute("screenWindowWidth", "float", struct.pack("<f", 1.0)),
        b"\0",
    ))


def _zip_pack(raw):
    """OpenEXR's ZIP: even bytes then odd bytes, each byte stored as its difference to the one
    before (+128), then zlib; a block that would not shrink is stored as it is."""
    data = np.frombuffer(raw, np.uint8)
    reordered = np.concatenate((data[0::2], data[1::2]))
    predicted = np.concatenate((reordered[:1], np.diff(reordered) + np.uint8(128)))
    packed = zlib.compress(predicted.tobytes())
    return packed if len(packed) < len(raw) else raw


def _zip_unpack(packed):
    predicted = np.frombuffer(zlib.decompress(packed), np.uint8)
    differences = np.concatenate((predicted[:1], predicted[1:] - np.uint8(128)))
    reordered = np.cumsum(differences, dtype=np.uint8)  # wraps modulo 256, as the predictor did
    raw = np.empty_like(reordered)
    half = (len(raw) + 1) // 2
    raw[0::2], raw[1::2] = reordered[:half], reordered[half:]
    return raw.tobytes()


def encode_exr(channels):
    """OpenEXR bytes for channels: name → (H, W) array, all one shape, stored as 32-bit float."""
    names = sorted(channels)
    if not names:
        raise ValueError("an EXR image needs at least one channel")
    planes = np.stack([np.asarray(channels[name], np.float32) for name in names])
    if planes.ndim != 3:
        raise ValueError(f"EXR channels must be (H, W) arrays, got shape {planes.shape[1:]}")
    _, height, width = planes.shape
    lines = _LINES_PER_BLOCK[_COMPRESSIONS["ZIP"]]
    chunks = []
    for top in range(0, height, lines):
        raw = planes[:, top:top + lines].transpose(1, 0, 2).astype("<f4").tobytes()
        packed = _zip_pack(raw)
        chunks.append(struct.pack("<ii", top, len(packed)) + packed)
    start = _MAGIC + struct.pack("<i", _VERSION) + _header(names, height, width)
    offsets, position = [], len(start) + 8 * len(chunks)
    for chunk in chunks:
        offsets.append(position)
        position += len(chunk)
    return start + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(chunks)


def write_exr(path, channels):
    """Write channels (name → (H, W) float32 array) to path as a ZIP-compressed OpenEXR, whole."""
    write_whole(path, encode_exr(channels))


class _Reader:
    def __init__(self, data, path):
        self.data, self.path, self.position = data, path, 0

    def fail(self, why):
        raise ValueError(f"{self.path}: {why}")

    def take(self, size):
        if self.position + size > len(self.data):
            self.fail("the file ends too early (cut off?)")
        piece = self.data[self.position:self.position + size]
        self.position += size
        return piece

    def name(self):
        end = self.data.find(b"\0", self.position)
        if end < 0:
            self.fail("the header ends too early")
        return self.take(end - self.position + 1)[:-1].decode("latin-1")


def _parse_channels(value, reader):
    channels, position = [], 0
    while value[position:position + 1] not in (b"\0", b""):
        end = value.index(b"\0", position)
        name = value[position:end].decode("latin-1")
        pixel_type, _, x_sampling, y_sampling = struct.unpack_from("<iB3xii", value, end + 1)
        if pixel_type not in _PIXEL_TYPES:
            reader.fail(f"channel {name!r} has pixel type {pixel_type}; only HALF and FLOAT are read")
        if (x_sampling, y_sampling) != (1, 1):
            reader.fail(f"channel {name!r} is subsampled; only full-resolution channels are read")
        channels.append((name, _PIXEL_TYPES[pixel_type]))
        position = end + 1 + 16
    return channels


def _read_header(reader):
    if reader.take(4) != _MAGIC:
        reader.fail("not an OpenEXR file")
    version, = struct.unpack("<i", reader.take(4))
    if version & 0xFF != _VERSION or version & ~0xFF & ~_SINGLE_PART_SCANLINE_FLAGS:
        reader.fail("only single-part scanline OpenEXR files are read (not tiled, deep or multi-part)")
    attributes = {}
    while name := reader.name():
        reader.name()  # the attribute's type, known from its name for the ones read here
        size, = struct.unpack("<i", reader.take(4))
        attributes[name] = reader.take(size)
    return attributes


def _block_bytes(reader, compression, size, expected):
    """A block's uncompressed bytes; OpenEXR stores a block as it is when packing would not shrink it."""
    data = reader.take(size)
    if size < expected and compression:
        try:
            data = _zip_unpack(data)
        except zlib.error as error:
            reader.fail(f"a block does not decompress ({error})")
    if len(data) != expected:
        reader.fail(f"a block holds {len(data)} bytes instead of {expected}")
    return data


def _decode_blocks(reader, attributes):
    channels = _parse_channels(attributes["channels"], reader)
    compression = attributes["compression"][0]
    if compression not in _LINES_PER_BLOCK:
        name = _COMPRESSION_NAMES.get(compression, compression)
        reader.fail(f"compression {name} is not read, only NONE, ZIPS and ZIP")
    x_min, y_min, x_max, y_max = struct.unpack("<4i", attributes["dataWindow"])
    width, height = x_max - x_min + 1, y_max - y_min + 1
    lines = _LINES_PER_BLOCK[compression]
    planes = {name: np.empty((height, width), np.float32) for name, _ in channels}
    line_bytes = sum(dtype.itemsize for _, dtype in channels) * width
    block_count = -(-height // lines)
    for offset in struct.unpack(f"<{block_count}Q", reader.take(8 * block_count)):
        reader.position = offset
        y, size = struct.unpack("<ii", reader.take(8))
        top = y - y_min
        if top < 0 or top >= height or top % lines:
            reader.fail(f"a block starts at line {y}, not where a block of the image starts")
        rows = min(lines, height - top)
        data = _block_bytes(reader, compression, size, rows * line_bytes)
        _scatter_block(data, range(top, top + rows), width, channels, planes)
    return planes


def _scatter_block(data, rows, width, channels, planes):
    """A block holds its scanlines one after another, each scanline its channels in name order."""
    position = 0
    for row in rows:
        for name, dtype in channels:
            planes[name][row] = np.frombuffer(data, dtype, width, position)
            position += dtype.itemsize * width


def read_exr(path):
    """The channels of a scanline OpenEXR file: name → (H, W) float32 array (HALF widened)."""
    with open(path, "rb") as file:
        reader = _Reader(file.read(), path)
    attributes = _read_header(reader)
    for required in ("channels", "compression", "dataWindow"):
        if required not in attributes:
            reader.fail(f"the header has no {required}")
    return _decode_blocks(reader, attributes)
