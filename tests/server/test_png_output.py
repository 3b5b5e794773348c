"""The server's PNG writer (images.png_file): the pixels and text chunks any reader gets back, at
every compression level --png-compression takes."""
import io

import numpy as np
import pytest
from PIL import Image

from sd_blender_server.arguments import parse_args, server_config
from sd_blender_server.images import png_file

RANDOM = np.random.default_rng(5)
PIXELS = {
    "RGB": RANDOM.integers(0, 256, (37, 53, 3), dtype=np.uint8),
    "RGBA": RANDOM.integers(0, 256, (16, 24, 4), dtype=np.uint8),
    "L": RANDOM.integers(0, 256, (9, 31), dtype=np.uint8),
}


def read_back(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # checks every chunk's CRC and the zlib stream
    return image


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("mode", PIXELS)
def test_pixels_come_back_exactly(mode, level):
    image = read_back(png_file(Image.fromarray(PIXELS[mode], mode), {}, level))
    assert image.mode == mode
    assert np.array_equal(np.asarray(image), PIXELS[mode])


def test_other_modes_are_written_as_rgb():
    palette = Image.fromarray(PIXELS["RGB"]).convert("P")
    image = read_back(png_file(palette, {}, 0))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), np.asarray(palette.convert("RGB")))


def test_latin1_text_is_a_text_chunk_and_other_text_an_international_one():
    texts = {"parameters": "a café, Steps: 4", "sd_blender": '{"prompt": "家と庭 ✓"}'}
    data = png_file(Image.fromarray(PIXELS["RGB"]), texts, 0)
    assert b"tEXtparameters\0a caf\xe9" in data and b"iTXtsd_blender\0" in data
    assert read_back(data).text == texts


def test_a_higher_level_makes_a_smooth_image_smaller():
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (64, 1)))
    stored, deflated = (len(png_file(gradient, {}, level)) for level in (0, 6))
    assert deflated < stored / 4


def test_the_command_line_sets_the_level_and_refuses_one_past_9(capsys):
    assert server_config(parse_args(["--png-compression", "6"])).png_compression == 6
    assert server_config(parse_args([])).png_compression == 0
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--png-compression", "10"])
    assert exit_info.value.code == 2 and "--png-compression" in capsys.readouterr().err
