"""Time the control passes of the demo scene: `python bench/passes_bench.py [--size 512] [--runs 15]`.

Prints the median and the spread of `render_control_images` (Cycles render + EXR read +
conversion), the work the Generate button does on Blender's UI thread before returning.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for variable in ("BLENDER_USER_RESOURCES", "XDG_CACHE_HOME", "MESA_SHADER_CACHE_DIR"):
    os.environ.setdefault(variable, os.path.join(tempfile.mkdtemp(prefix="sd_blender_bench_"), variable.lower()))
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tools")]

import bpy  # noqa: E402
from demo_scene import build_demo_scene  # noqa: E402
from sd_blender.passes import PASS_KINDS, render_control_images  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    scene = build_demo_scene()
    render_control_images(scene, PASS_KINDS, args.size, args.size)  # warm-up: kernels, BVH
    seconds = []
    for _ in range(args.runs):
        started = time.perf_counter()
        render_control_images(scene, PASS_KINDS, args.size, args.size)
        seconds.append(time.perf_counter() - started)
    print(f"Blender {bpy.app.version_string}, passes {','.join(PASS_KINDS)}, {args.size}x{args.size}, "
          f"{args.runs} runs: median {statistics.median(seconds) * 1000:.0f} ms, "
          f"min {min(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
