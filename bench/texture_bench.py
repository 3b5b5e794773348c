"""Time the Blender side of whole-object texturing: `python bench/texture_bench.py [--triangles 20000]
[--views 8] [--view-size 512] [--texture-size 2048] [--runs 3] [--smart-uv]`.

A UV sphere of about --triangles triangles (its own UV map, which fills the whole UV square: the
most texels a layout can have; with --smart-uv it has none, so the bake makes "SD Bake" by Smart UV
Project, once, timed apart, as for a mesh without UVs), --views orbit views around it, and
for each run: the texels of the texture (UV rasterisation), each view's geometry render and its
correspondence with the texels (visibility, cosines, the view's own rasterisation), the fusion
of --views images into the texture with dilation and filling, and the PNG written. The images
are random (the server's work is not timed here: see generation_bench.py). Target on the 2-core
CPU: at most 10 s for 20k triangles, 8 views, 2048² (docs/performance.md).
"""
import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for variable in ("BLENDER_USER_RESOURCES", "XDG_CACHE_HOME", "MESA_SHADER_CACHE_DIR"):
    os.environ.setdefault(variable, os.path.join(tempfile.mkdtemp(prefix="sd_blender_bench_"), variable.lower()))
sys.path[:0] = [str(REPO_ROOT)]

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from sd_blender.scene.texels import bake_uv_names, see, texture_targets  # noqa: E402
from sd_blender.scene.texturing import bake, save_texture  # noqa: E402
from sd_blender.scene.views import orbit_cameras, temporary_cameras  # noqa: E402


def sphere(triangles, smart_uv):
    """A UV sphere with about `triangles` triangles: rings × segments quads, two triangles each;
    without UV map when `smart_uv`."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    segments = max(int(math.sqrt(triangles / 2) * 1.4), 8)
    rings = max(triangles // (2 * segments), 4)
    bpy.ops.mesh.primitive_uv_sphere_add(segments=segments, ring_count=rings, radius=1.0)
    obj = bpy.context.active_object
    if smart_uv:
        obj.data.uv_layers.remove(obj.data.uv_layers[0])
    obj.data.calc_loop_triangles()
    return obj, len(obj.data.loop_triangles)


def one_run(scene, obj, views, view_size, texture_size, folder):
    """Seconds per phase of one texturing's Blender side."""
    seconds = {}
    started = time.perf_counter()
    targets = texture_targets([obj], None, texture_size, shared=False, view_side=view_size)
    seconds["texels"] = time.perf_counter() - started
    with temporary_cameras(scene) as make:
        cameras = orbit_cameras(make, [obj], views, view_size, view_size)
        started = time.perf_counter()
        seen = [see(scene, camera, targets, view_size, view_size) for camera in cameras]
        seconds["views"] = time.perf_counter() - started
    rng = np.random.default_rng(0)
    images = [rng.random((view_size, view_size, 3), dtype=np.float32) for _ in cameras]
    started = time.perf_counter()
    baked = bake(targets, seen, images)[0]
    seconds["fusion"] = time.perf_counter() - started
    started = time.perf_counter()
    save_texture(baked, os.path.join(folder, "texture.png"))
    seconds["png"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return seconds, baked.coverage


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--triangles", type=int, default=20000)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--view-size", type=int, default=512)
    parser.add_argument("--texture-size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smart-uv", action="store_true", help="no UV map: the bake makes 'SD Bake' first")
    args = parser.parse_args()
    obj, triangles = sphere(args.triangles, args.smart_uv)
    scene = bpy.context.scene
    if args.smart_uv:
        started = time.perf_counter()
        bake_uv_names([obj], None)
        print(f"Smart UV Project into 'SD Bake' (once per object): {time.perf_counter() - started:.2f} s")
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.runs):
            seconds, coverage = one_run(scene, obj, args.views, args.view_size, args.texture_size, folder)
            runs.append(seconds)
    texels = len(texture_targets([obj], None, args.texture_size, shared=False, view_side=args.view_size)[0].surface.texels)
    print(f"Blender {bpy.app.version_string}, {triangles} triangles, {args.views} views of {args.view_size}², "
          f"texture {args.texture_size}² (fused in {texels} texels on the surface), coverage {coverage:.1%}, {args.runs} runs "
          "(median seconds):")
    for phase in runs[0]:
        print(f"  {phase:7s} {statistics.median(run[phase] for run in runs):6.2f}")


if __name__ == "__main__":
    main()
