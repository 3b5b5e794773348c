"""Saving the open .blend whole or not at all (sd_blender/saving.py), and the check that tells a
whole .blend from a cut-off one, on the files this Blender writes (4.5 and 5.0 formats)."""
import bpy
import pytest

from sd_blender.core.files import is_whole_blend
from sd_blender.scene.saving import save_copy_whole


@pytest.mark.parametrize("compress", [False, True])
def test_a_saved_blend_is_whole_and_none_of_its_cut_off_beginnings_is(empty_scene, tmp_path, compress):
    bpy.ops.mesh.primitive_uv_sphere_add()
    path = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=compress)
    data = path.read_bytes()
    assert is_whole_blend(path)
    cut = tmp_path / "cut.blend"
    for length in [*range(0, len(data), len(data) // 97), *range(len(data) - 40, len(data))]:
        cut.write_bytes(data[:length])
        assert not is_whole_blend(cut), length


def test_save_copy_whole_replaces_the_file_and_leaves_nothing_else(empty_scene, tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    target = tmp_path / "copy.blend"
    target.write_bytes(b"an older copy")
    save_copy_whole(str(target))
    assert is_whole_blend(target)
    assert [path.name for path in tmp_path.iterdir()] == ["copy.blend"]
    assert bpy.data.filepath == ""  # the open file keeps its own path
