"""`sd_blender texture` against a live tiny-model server, in real Blender: views placed around a
cube, generated (independent, sequential, synchronized), fused and baked into its UV map; their
live previews written with --previews."""
import json
import re

import bpy
import numpy as np
import pytest
from PIL import Image

from sd_blender.ui import cli

VIEW_SIZE = ("64", "64")


@pytest.fixture
def cube_file(addon, tmp_path):
    """A saved file with a cube (its own UVs), a camera looking at it, a depth control unit."""
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    bpy.context.active_object.name = "Cube"
    bpy.ops.object.camera_add(location=(0.0, -7.0, 1.5), rotation=(1.36, 0.0, 0.0))
    scene = bpy.context.scene
    scene.camera = bpy.context.active_object
    scene.sd_blender.control_units.add().kind = "depth"
    scene.sd_blender.steps = 2
    path = tmp_path / "cube.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


def texture(cube_file, out, *options):
    return cli.run([
        "texture", str(cube_file), "--objects", "Cube", "--prompt", "weathered bronze", "--seed", "7",
        "--size", *VIEW_SIZE, "--texture-size", "512", "--out", str(out),
        "--server", bpy.context.preferences.addons["sd_blender"].preferences.server_url, *options,
    ])


def read_report(out):
    return json.loads((out / "cube_Scene_texture_report.json").read_text())


def test_independent_views_around_a_cube_cover_it_and_are_baked_into_its_uv_map(cube_file, tmp_path):
    bpy.ops.wm.open_mainfile(filepath=str(cube_file))
    bpy.context.scene.sd_blender.apply_to = "MATERIAL"  # the panel's choice for Generate: not the views'
    bpy.ops.wm.save_as_mainfile(filepath=str(cube_file))
    out = tmp_path / "out"
    assert texture(cube_file, out, "--views", "6", "--mode", "independent") == 0

    report = read_report(out)
    entry = report["objects"]["Cube"]
    assert entry["coverage"] == pytest.approx(1.0, abs=1e-3), "6 orbit views see all of a convex object"
    assert entry["uv_map"] == "UVMap" and len(entry["view_agreement"]["per_view"]) == 6
    assert report["views"] == [f"SD View {index}" for index in range(1, 7)] and report["seed"] == 7
    assert report["fill_view"] is None, "nothing was left unseen"
    assert report["seconds"]["server"] > 0 and report["seconds"]["blender"] > 0
    texture_image = np.asarray(Image.open(out / "cube_Scene_Cube_texture.png"))
    assert texture_image.shape == (512, 512, 3) and texture_image.std() > 0
    for index in range(1, 7):
        assert (out / f"cube_Scene_view_{index:02d}.png").is_file()
    recorded = json.loads(Image.open(out / "cube_Scene_view_01.png").text["sd_blender"])
    assert [control["type"] for control in recorded["controls"]] == ["depth"] and "tiling" not in recorded
    assert recorded["preview_every"] == 0, "no --previews: none asked for"
    assert not [obj for obj in bpy.data.objects if obj.name.startswith("SD View")], "the views' cameras are removed"
    tree = bpy.data.objects["Cube"].material_slots[0].material.node_tree
    assert tree.nodes["SD Texture UV Map"].uv_map == "UVMap"


def test_sequential_masks_shrink_view_after_view(cube_file, tmp_path):
    out = tmp_path / "out"
    assert texture(cube_file, out, "--views", "4", "--strategy", "active", "--mode", "sequential") == 0

    report = read_report(out)
    assert len(report["masks"]) == 3  # the first view is generated whole
    masks = [np.asarray(Image.open(path)) for path in report["masks"]]
    generated = [int((mask == 255).sum()) for mask in masks]
    assert generated[0] > 0
    assert generated == sorted(generated, reverse=True) and generated[-1] < generated[0], generated
    assert report["objects"]["Cube"]["coverage"] > 0.6


def test_synchronized_views_agree_far_better_than_independent_ones(cube_file, tmp_path):
    """The fusion makes even the random-weight tiny model's views agree: the view agreement (mean
    difference between each view and the baked texture seen from it) drops at least threefold."""
    agreement = {}
    for mode in ("independent", "synchronized"):
        out = tmp_path / mode
        assert texture(cube_file, out, "--views", "8", "--mode", mode, "--size", "256", "256", "--steps", "8") == 0
        agreement[mode] = read_report(out)["objects"]["Cube"]["view_agreement"]["mean"]
        assert (out / "cube_Scene_view_08.png").is_file()
    assert agreement["synchronized"] * 3 <= agreement["independent"], agreement


PREVIEW_STEPS = 24  # a job long enough for its worker to see a preview announced while it runs


def texture_previews(cube_file, tmp_path, mode, side):
    """`texture` in `mode` with views side × side and --previews; the jobs' stems and steps that
    the preview files written are named after, and the first view's recorded parameters."""
    out, previews = tmp_path / "out", tmp_path / "previews"
    assert texture(cube_file, out, "--views", "2", "--mode", mode, "--steps", str(PREVIEW_STEPS),
                   "--size", str(side), str(side), "--previews", str(previews)) == 0
    written = []
    for path in sorted(previews.iterdir()):
        stem, step = re.fullmatch(r"preview_(.+)_(\d+)\.png", path.name).groups()
        assert int(step) % 3 == 0 and 0 < int(step) < PREVIEW_STEPS, path.name
        with Image.open(path) as png:
            assert max(png.size) <= side, path.name
        written.append((stem, int(step)))
    return written, json.loads(Image.open(out / "cube_Scene_view_01.png").text["sd_blender"])


def test_sequential_views_write_their_previews_named_after_each_job(cube_file, tmp_path):
    written, recorded = texture_previews(cube_file, tmp_path, "sequential", 64)
    assert recorded["preview_every"] == 3
    stems = {stem for stem, _ in written}
    assert "cube_Scene_view_01" in stems, written
    assert all(re.fullmatch(r"cube_Scene_view_\d\d(_generate|_refine)?", stem) for stem in stems), written


def test_a_synchronized_job_writes_the_previews_of_its_first_view(cube_file, tmp_path):
    written, recorded = texture_previews(cube_file, tmp_path, "synchronized", 128)  # a texture of 16² latents
    assert recorded["preview_every"] == 3
    assert "cube_Scene_views" in {stem for stem, _ in written}, written


def test_a_last_view_is_aimed_at_what_no_view_saw(cube_file, tmp_path):
    out = tmp_path / "out"
    assert texture(cube_file, out, "--views", "4", "--mode", "independent") == 0  # a ring: the bottom unseen

    report = read_report(out)
    assert report["fill_view"] == "SD View 5" and report["views"][-1] == "SD View 5"
    assert len(report["masks"]) == 1 and (out / "cube_Scene_view_05.png").is_file()
    mask = np.asarray(Image.open(report["masks"][0]))
    assert (mask == 255).sum() > 0, "the last view generates what was unseen"
    assert report["objects"]["Cube"]["coverage"] > 0.8  # 4 of 6 faces without it


def test_more_views_than_the_server_takes_in_one_job_are_refused_before_rendering(cube_file, tmp_path, capsys):
    assert texture(cube_file, tmp_path / "out", "--views", "17", "--mode", "synchronized") == 1
    assert ("this server takes at most 16 views in a synchronized job (its --max-views), not 17"
            in capsys.readouterr().err)
    assert not list((tmp_path / "out").glob("*_view_*.png"))


def test_linked_duplicates_share_one_texture(cube_file, tmp_path):
    bpy.ops.wm.open_mainfile(filepath=str(cube_file))
    twin = bpy.data.objects["Cube"].copy()  # shares the mesh, and so its materials
    twin.name = "Twin"
    twin.location.x += 4
    bpy.context.scene.collection.objects.link(twin)
    bpy.ops.wm.save_as_mainfile(filepath=str(cube_file))
    out = tmp_path / "out"
    assert cli.run([
        "texture", str(cube_file), "--objects", "Cube,Twin", "--prompt", "brass", "--seed", "7", "--size", *VIEW_SIZE,
        "--texture-size", "512", "--views", "2", "--mode", "independent", "--out", str(out),
        "--server", bpy.context.preferences.addons["sd_blender"].preferences.server_url,
    ]) == 0
    objects = read_report(out)["objects"]
    assert objects["Cube"] == objects["Twin"] and objects["Cube"]["texture"].endswith("cube_Scene_Cube_texture.png")
    assert not (out / "cube_Scene_Twin_texture.png").exists()
