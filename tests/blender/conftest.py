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

import bpy  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def empty_scene():
    """A factory-fresh empty file, so tests never see each other's objects."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene
