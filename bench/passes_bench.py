"""Time the control passes of the demo scene: `python bench/passes_bench.py [--size 512] [--runs 15]`.

Prints the median and the spread of `render_control_images` (Cycles render + EXR read +
conversion), the work the Generate button does on Blender's UI thread before returning: for
depth + normal + openpose (the target: at most 0.5 s median at 512x512 on a 2-core CPU), depth
and normal, all geometry passes together, openpose alone (read from the armature and drawn, no
render), then each geometry pass alone. All geometry passes share one render, so together they
cost little more than the dearest alone. The color pass is the user's own beauty render: its
time is the scene's, not ours, and it is not timed here.
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
from sd_blender.scene.passes import GEOMETRY_KINDS, render_control_images  # noqa: E402


def time_kinds(scene, kinds, size, runs):
    render_control_images(scene, kinds, size, size)  # warm-up: kernels, BVH
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        render_control_images(scene, kinds, size, size)
        seconds.append(time.perf_counter() - started)
    print(f"Blender {bpy.app.version_string}, passes {','.join(kinds)}, {size}x{size}, "
          f"{runs} runs: median {statistics.median(seconds) * 1000:.0f} ms, "
          f"min {min(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    scene = build_demo_scene()
    combinations = [["depth", "normal", "openpose"], ["depth", "normal"], list(GEOMETRY_KINDS), ["openpose"]]
    for kinds in combinations + [[kind] for kind in GEOMETRY_KINDS]:
        time_kinds(scene, kinds, args.size, args.runs)


if __name__ == "__main__":
    main()
