"""The PNG reader, against PNGs that Pillow writes and scanlines filtered with each filter type."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sd_blender.core.png import decode_png, encode_png, read_png


def sample_pixels(shape, seed=0):
    rng = np.random.default_rng(seed)
    rows, columns = np.indices(shape[:2])
    smooth = (rows * 3 + columns * 5) % 256
    noise = rng.integers(0, 40, shape)
    return ((smooth[..., None] if len(shape) == 3 else smooth) + noise).astype(np.uint8)


def filtered_png(pixels, kinds):
    """A PNG whose scanline y uses filter type kinds[y % len(kinds)], filtered the way the PNG
    specification spells it out, byte by byte."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    lines = pixels.reshape(height, -1).astype(int)
    data = bytearray()
    for y, line in enumerate(lines):
        kind = kinds[y % len(kinds)]
        prior = lines[y - 1] if y else np.zeros_like(line)
        data.append(kind)
        for i, value in enumerate(line):
            left = line[i - channels] if i >= channels else 0
            up, up_left = prior[i], (prior[i - channels] if i >= channels else 0)
            estimate = left + up - up_left
            # The nearest of left, up, up_left to the estimate, ties going to the earlier.
            paeth = min((abs(estimate - guess), order, guess) for order, guess in enumerate((left, up, up_left)))[2]
            data.append((value - (0, left, up, (left + up) // 2, paeth)[kind]) % 256)
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    image_data = chunk(b"IDAT", zlib.compress(bytes(data)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + image_data + chunk(b"IEND", b"")


@pytest.mark.parametrize("shape", [(9, 11), (9, 11, 2), (9, 11, 3), (9, 11, 4)])
def test_every_filter_type_is_undone(shape):
    pixels = sample_pixels(shape)
    data = filtered_png(pixels, kinds=[4, 3, 1, 0, 2, 4, 4, 3])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)  # the test's encoder is right
    decoded = decode_png(data)
    assert decoded.dtype == np.uint8 and decoded.shape == pixels.shape
    assert np.array_equal(decoded, pixels)


@pytest.mark.parametrize("mode, shape", [("L", (40, 70)), ("RGB", (40, 70, 3)), ("RGBA", (40, 70, 4))])
def test_reads_what_pillow_writes(tmp_path, mode, shape):
    pixels = sample_pixels(shape, seed=1)
    Image.fromarray(pixels, mode).save(tmp_path / "frame.png")
    assert np.array_equal(read_png(tmp_path / "frame.png"), pixels)


def test_reads_what_encode_png_writes():
    pixels = sample_pixels((6, 5, 3))
    assert np.array_equal(decode_png(encode_png(pixels)), pixels)


def test_refuses_what_it_cannot_read(tmp_path):
    palette = io.BytesIO()
    Image.fromarray(sample_pixels((4, 4))).convert("P").save(palette, "PNG")
    with pytest.raises(ValueError, match="colour type 3"):
        decode_png(palette.getvalue(), "palette.png")
    whole = encode_png(sample_pixels((8, 8, 3)))
    (tmp_path / "cut.png").write_bytes(whole[:-20])
    with pytest.raises(ValueError, match=r"cut\.png"):
        read_png(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="not a PNG"):
        decode_png(b"GIF89a" + whole[6:])
