"""The OpenEXR writer and reader, checked against an independent implementation: OpenImageIO,
which ships inside the bpy wheel."""
import glob
import struct
import sys

import numpy as np
import pytest

from sd_blender.core.exr import encode_exr, read_exr, write_exr


@pytest.fixture(scope="module")
def oiio():
    bpy = pytest.importorskip("bpy")
    sys.path.append(glob.glob(bpy.utils.resource_path("LOCAL") + "/python/lib/python3*/site-packages")[0])
    return pytest.importorskip("OpenImageIO")


def motion_like(height=37, width=53, seed=0):
    """Values whose bytes vary in every position, in an image whose height is no multiple of 16."""
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(0, 5, (height, width)).astype(np.float32),
            "Y": rng.normal(0, 500, (height, width)).astype(np.float32)}


def test_round_trip_is_exact(tmp_path):
    channels = motion_like()
    special = [np.inf, -np.inf, -0.0, 1e-42, np.finfo(np.float32).max, 0.1]
    channels["A"] = np.resize(np.array(special, np.float32), channels["X"].shape)
    write_exr(tmp_path / "m.exr", channels)
    read = read_exr(tmp_path / "m.exr")
    assert sorted(read) == ["A", "X", "Y"]
    for name, plane in channels.items():
        assert read[name].dtype == np.float32
        np.testing.assert_array_equal(read[name], plane)
        assert (np.signbit(read[name]) == np.signbit(plane)).all()


def test_zip_compresses_smooth_data():
    ramp = np.tile(np.arange(64, dtype=np.float32), (64, 1))
    assert len(encode_exr({"X": ramp, "Y": ramp.T})) < ramp.nbytes


def test_openimageio_reads_what_is_written(tmp_path, oiio):
    channels = motion_like()
    write_exr(tmp_path / "motion.exr", channels)
    image = oiio.ImageInput.open(str(tmp_path / "motion.exr"))
    try:
        spec = image.spec()
        assert spec.channelnames == ("X", "Y")
        assert spec.get_string_attribute("compression") == "zip"
        assert spec.format == oiio.FLOAT
        pixels = image.read_image(oiio.FLOAT)
    finally:
        image.close()
    np.testing.assert_array_equal(pixels[..., 0], channels["X"])
    np.testing.assert_array_equal(pixels[..., 1], channels["Y"])


@pytest.mark.parametrize("compression", ["zip", "zips", "none"])
@pytest.mark.parametrize("half", [False, True])
def test_reads_what_openimageio_writes(tmp_path, oiio, compression, half):
    channels = motion_like()
    spec = oiio.ImageSpec(53, 37, 2, oiio.HALF if half else oiio.FLOAT)
    spec.channelnames = ("X", "Y")
    spec.attribute("compression", compression)
    path = str(tmp_path / "written.exr")
    output = oiio.ImageOutput.create(path)
    assert output.open(path, spec)
    output.write_image(np.stack((channels["X"], channels["Y"]), axis=-1))
    output.close()
    read = read_exr(path)
    for name, plane in channels.items():
        expected = plane.astype(np.float16).astype(np.float32) if half else plane
        np.testing.assert_array_equal(read[name], expected)


def test_unsupported_compression_names_the_file(tmp_path):
    data = bytearray(encode_exr(motion_like()))
    at = data.index(b"compression\0compression\0") + len(b"compression\0compression\0") + 4
    data[at] = 4  # PIZ
    path = tmp_path / "piz.exr"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"piz\.exr.*PIZ"):
        read_exr(path)


def test_a_cut_off_or_foreign_file_names_the_file(tmp_path):
    whole = encode_exr(motion_like())
    (tmp_path / "cut.exr").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "other.exr").write_bytes(b"\x89PNG" + whole[4:])
    with pytest.raises(ValueError, match=r"cut\.exr"):
        read_exr(tmp_path / "cut.exr")
    with pytest.raises(ValueError, match=r"other\.exr.*not an OpenEXR"):
        read_exr(tmp_path / "other.exr")


def test_version_field_is_single_part_scanline():
    assert struct.unpack_from("<ii", encode_exr(motion_like())) == (20000630, 2)
