"""Real headless Blender (the bpy module) for every test in this folder.

Blender writes its user config and caches under these variables: they point at a temporary
folder so a test run never touches the home folder. They must be set before bpy is imported.
"""
import os
import sys
import tempfile
from pathlib import Path

_blender_home = tempfile.mkdtemp(prefix="sd_blender_test_home_")
for _variable in ("BLENDER_USER_RESOURCES", "XDG_CACHE_HOME", "MESA_SHADER_CACHE_DIR"):
    os.environ[_variable] = os.path.join(_blender_home, _variable.lower())

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))  # live_server

import bpy  # noqa: E402  (first: it puts Blender's own modules, addon_utils among them, on the path)
import addon_utils  # noqa: E402
import pytest  # noqa: E402

from live_server import running_server  # noqa: E402
from rigs import NAMINGS, build_humanoid  # noqa: E402
from scenes import sphere_and_wall_scene  # noqa: E402


@pytest.fixture
def empty_scene():
    """A factory-fresh empty file, so tests never see each other's objects."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live tiny-model server on 127.0.0.1 for the tests of one file; yields its URL."""
    with running_server(cache_dir=tmp_path_factory.mktemp("server_cache")) as live:
        yield live.url


@pytest.fixture
def addon(empty_scene, server):
    """The add-on enabled as a user enables it, its preferences pointing at the live server."""
    addon_utils.enable("sd_blender", default_set=True)
    bpy.context.preferences.addons["sd_blender"].preferences.server_url = server
    yield bpy.context.preferences.addons["sd_blender"].preferences
    addon_utils.disable("sd_blender", default_set=True)


@pytest.fixture
def saved_scene(addon, tmp_path):
    """A small sphere-and-wall shot with a depth unit and a Mixamo-named dancer, saved as shot.blend."""
    scene = sphere_and_wall_scene(bpy.context.scene, size=96)
    scene.render.resolution_y = 64
    scene.sd_blender.prompt = "a marble sphere in front of a brick wall"
    scene.sd_blender.steps = 4
    scene.sd_blender.control_units.add().kind = "depth"
    scene.render.engine = "CYCLES"  # the color pass is the scene's own render: keep it quick
    scene.cycles.samples = 1
    build_humanoid(scene, NAMINGS["mixamo"], name="Dancer", location=(-1.5, -3.0, -0.9))
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    return scene
