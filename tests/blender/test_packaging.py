"""The extension zip (`make extension`) validates, installs with Blender's own "Install from
Disk" operator, enables, and works. Installing happens in a fresh Blender process so the
installed copy never meets the copy the other tests import from the repository."""
import json
import os
import subprocess
import sys
import tomllib

import bpy
import pytest

from conftest import REPO_ROOT

INSTALL_AND_USE = r"""
import json, math, sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
result = bpy.ops.extensions.package_install_files(filepath=sys.argv[-1], repo="user_default", enable_on_install=True)
scene = bpy.context.scene
scene.render.resolution_x = scene.render.resolution_y = 64
bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0)
camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
camera.location, camera.rotation_euler = (0, -10, 0), (math.radians(90), 0, 0)
scene.collection.objects.link(camera)
scene.camera = camera
bpy.ops.sd_blender.preview_passes()
image = bpy.data.images["SD depth"]
centre = (32 * 64 + 32) * 4
print("RESULT " + json.dumps({
    "install": sorted(result),
    "addons": [addon.module for addon in bpy.context.preferences.addons],
    "server_url": bpy.context.preferences.addons["bl_ext.user_default.sd_blender"].preferences.server_url,
    "depth_centre": image.pixels[centre],
    "depth_corner": image.pixels[0],
}))
"""


@pytest.fixture(scope="module")
def extension_zip():
    version = tomllib.loads((REPO_ROOT / "blender_manifest.toml").read_text())["version"]
    path = REPO_ROOT / "dist" / f"sd_blender-{version}.zip"
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `make extension`")
    return path


def test_zip_passes_blenders_extension_validator(extension_zip):
    tool = os.path.join(bpy.utils.resource_path("LOCAL"), "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py")
    completed = subprocess.run([sys.executable, tool, "validate", str(extension_zip)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Success" in completed.stdout


def test_installs_enables_and_renders_a_pass(extension_zip, tmp_path):
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    completed = subprocess.run([sys.executable, "-c", INSTALL_AND_USE, str(extension_zip)],
                               capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stdout[-2000:] + completed.stderr[-2000:]
    result = json.loads(lines[0][len("RESULT "):])
    assert result["install"] == ["FINISHED"]
    assert "bl_ext.user_default.sd_blender" in result["addons"]
    assert result["server_url"] == "http://127.0.0.1:7870"
    assert result["depth_centre"] == 1.0 and result["depth_corner"] == 0.0
    assert (tmp_path / "user" / "extensions" / "user_default" / "sd_blender" / "blender_manifest.toml").exists()
