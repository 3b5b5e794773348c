import io

import numpy as np
import pytest
from PIL import Image

from sd_blender.core.png import encode_png, write_png


@pytest.mark.parametrize("shape, mode", [((5, 7), "L"), ((5, 7, 3), "RGB"), ((5, 7, 4), "RGBA")])
def test_pillow_reads_back_the_same_pixels(shape, mode):
    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    image = Image.open(io.BytesIO(encode_png(pixels)))
    assert image.mode == mode and image.size == (7, 5)
    assert np.array_equal(np.asarray(image), pixels)


def test_write_png(tmp_path):
    path = tmp_path / "gray.png"
    write_png(path, np.full((2, 3), 200, np.uint8))
    assert np.asarray(Image.open(path))[1, 2] == 200


def test_refuses_what_it_cannot_encode():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="channels"):
        encode_png(np.zeros((2, 2, 2), np.uint8))
