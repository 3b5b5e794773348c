"""Write the example images of docs/conventions.md: every pass of the demo scene, small.

    .venv/bin/python tools/convention_examples.py [--size 256] [--out docs/images]
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for variable in ("BLENDER_USER_RESOURCES", "XDG_CACHE_HOME", "MESA_SHADER_CACHE_DIR"):
    os.environ.setdefault(variable, os.path.join(tempfile.mkdtemp(prefix="sd_blender_examples_"), variable.lower()))
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tools")]

from demo_scene import build_demo_scene  # noqa: E402
from sd_blender.core.pass_options import PassOptions  # noqa: E402
from sd_blender.core.png import write_png  # noqa: E402
from sd_blender.scene.passes import PASS_KINDS, render_control_images  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scene = build_demo_scene()
    images = render_control_images(scene, PASS_KINDS, args.size, args.size, PassOptions())
    for kind, pixels in images.items():
        path = args.out / f"{kind}.png"
        write_png(str(path), pixels)
        print(path)


if __name__ == "__main__":
    main()
