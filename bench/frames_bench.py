"""Time a frame batch: `python bench/frames_bench.py [--frames 24] [--size 512] [--steps 8]
[--modes off,anchor,warp,full] [--quick]`.

Builds its own shot (a textured ground and wall, an armature-deformed figure walking, a ball
rolling past, a camera dollying and panning; a depth control unit), then:

- the Blender side of the motion pass: `MotionFrames(size, size).render(scene)` frame after frame
  (each frame reuses the last one's triangles and depth), its first frame (nothing reused), and the
  geometry render of the same frames (`render_geometry`: depth, normal, surface ids) for scale.
  Target on the 2-core CPU: at most 0.25 s a frame at 512² (docs/performance.md).
- frames per second of the whole `python -m sd_blender generate SHOT.blend --frames 1-N --temporal
  MODE` command (passes, jobs, files, the temporal report) against a live tiny-model server on
  127.0.0.1 (warmed up first by two frames in full mode), each mode into its own folder, seed 7;
  the server's share is the sum of its jobs' run times (started_at → finished_at), and each mode's
  mean warping error and control floor are read from its frames_report.json. The tiny model is
  random: its errors say nothing of quality.

--quick: 6 frames at 128², 2 steps (a smoke run).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_HOME = tempfile.mkdtemp(prefix="sd_blender_bench_")
for variable in ("BLENDER_USER_RESOURCES", "XDG_CACHE_HOME", "MESA_SHADER_CACHE_DIR"):
    os.environ.setdefault(variable, os.path.join(BENCH_HOME, variable.lower()))
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from live_server import running_server  # noqa: E402  (the launcher the tests use)

import sd_blender  # noqa: E402
from sd_blender.scene.motion import MotionFrames  # noqa: E402
from sd_blender.scene.passes import render_geometry  # noqa: E402

SEED = 7
MODES = ("off", "anchor", "warp", "full")
# Bone name → (head, tail) of the figure's rig, and the limb (cylinder) each bone moves.
BONES = {
    "hips": ((0, 0, 0.9), (0, 0, 1.2)),
    "spine": ((0, 0, 1.2), (0, 0, 1.6)),
    "head": ((0, 0, 1.6), (0, 0, 1.9)),
    "arm.L": ((0.3, 0, 1.5), (0.3, 0, 0.9)),
    "arm.R": ((-0.3, 0, 1.5), (-0.3, 0, 0.9)),
    "leg.L": ((0.12, 0, 0.9), (0.12, 0, 0.05)),
    "leg.R": ((-0.12, 0, 0.9), (-0.12, 0, 0.05)),
}
BONE_PARENTS = {"spine": "hips", "head": "spine", "arm.L": "spine", "arm.R": "spine", "leg.L": "hips",
                "leg.R": "hips"}
LIMB_RADII = {"hips": 0.2, "spine": 0.22, "head": 0.13, "arm.L": 0.06, "arm.R": 0.06, "leg.L": 0.08,
              "leg.R": 0.08}


# The shot ------------------------------------------------------------------------------------

def textured_material(name, texture_node):
    """A material whose base colour is a procedural texture (ShaderNodeTexNoise, ...)."""
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes = material.node_tree.nodes
    texture = nodes.new(texture_node)
    material.node_tree.links.new(texture.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    return material


def grid(name, size, cuts, location, rotation, material):
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=cuts, y_subdivisions=cuts, size=size, location=location,
                                    rotation=rotation)
    obj = bpy.context.active_object
    obj.name = name
    obj.data.materials.append(material)
    return obj


def keyframes(target, path, values, frames):
    """Key target.path at the first and last frame (and the middle when three values)."""
    first, last = frames[0], frames[-1]
    for frame, value in zip((first, (first + last) // 2, last) if len(values) == 3 else (first, last), values):
        setattr(target, path, value)
        target.keyframe_insert(path, frame=frame)


def rig(frames):
    """An armature walking forward, its arms and legs swinging."""
    armature = bpy.data.armatures.new("rig")
    obj = bpy.data.objects.new("rig", armature)
    bpy.context.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    for name, (head, tail) in BONES.items():
        bone = armature.edit_bones.new(name)
        bone.head, bone.tail = head, tail
    for name, parent in BONE_PARENTS.items():
        armature.edit_bones[name].parent = armature.edit_bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    keyframes(obj, "location", [(-1.5, 0.5, 0), (1.5, -0.5, 0)], frames)
    for name, swing in (("arm.L", 0.6), ("arm.R", -0.6), ("leg.L", -0.5), ("leg.R", 0.5)):
        bone = obj.pose.bones[name]
        bone.rotation_mode = "XYZ"
        keyframes(bone, "rotation_euler", [(swing, 0, 0), (-swing, 0, 0), (swing, 0, 0)], frames)
    obj.pose.bones["spine"].rotation_mode = "XYZ"
    keyframes(obj.pose.bones["spine"], "rotation_euler", [(0, 0, -0.3), (0, 0, 0.3)], frames)
    return obj


def limb(name, head, tail, radius, sides=32, rings=17):
    """A cylinder of `sides` sides and `rings` rings from head to tail (capped), in vertex group `name`."""
    head, tail = np.array(head, float), np.array(tail, float)
    axis = (tail - head) / np.linalg.norm(tail - head)
    across = np.cross(axis, (1.0, 0, 0) if abs(axis[0]) < 0.9 else (0, 1.0, 0))
    across /= np.linalg.norm(across)
    other = np.cross(axis, across)
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    circle = radius * (np.cos(angles)[:, None] * across + np.sin(angles)[:, None] * other)
    vertices = [head + t * (tail - head) + circle for t in np.linspace(0, 1, rings)]
    faces = [(r * sides + s, r * sides + (s + 1) % sides, (r + 1) * sides + (s + 1) % sides, (r + 1) * sides + s)
             for r in range(rings - 1) for s in range(sides)]
    faces += [tuple(range(sides))[::-1], tuple(range((rings - 1) * sides, rings * sides))]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(np.concatenate(vertices).tolist(), [], faces)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.collection.objects.link(obj)
    obj.vertex_groups.new(name=name).add(range(len(mesh.vertices)), 1.0, "REPLACE")
    return obj


def figure(armature):
    """One mesh of a cylinder per bone, deformed by the armature."""
    limbs = [limb(name, head, tail, LIMB_RADII[name]) for name, (head, tail) in BONES.items()]
    bpy.ops.object.select_all(action="DESELECT")
    for obj in limbs:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = limbs[0]
    bpy.ops.object.join()
    body = bpy.context.active_object
    body.name = "figure"
    body.parent = armature
    body.modifiers.new("rig", "ARMATURE").object = armature
    return body


def ball(frames):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=32, ring_count=16, radius=0.4)
    obj = bpy.context.active_object
    obj.name = "ball"
    keyframes(obj, "location", [(2.5, -1.5, 0.4), (-2.5, -2.0, 0.4)], frames)
    keyframes(obj, "rotation_euler", [(0, 0, 0), (0, -6.0, 0)], frames)
    return obj


def camera(frames):
    """A camera dollying in and sideways, following a target that pans across the shot."""
    target = bpy.data.objects.new("camera target", None)
    bpy.context.collection.objects.link(target)
    keyframes(target, "location", [(-1.0, 0, 1.0), (1.0, 0, 1.0)], frames)
    obj = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    bpy.context.collection.objects.link(obj)
    keyframes(obj, "location", [(-2.0, -9.0, 2.0), (1.0, -6.5, 1.6)], frames)
    obj.constraints.new("TRACK_TO").target = target
    return obj


def build_shot(frame_count, size, steps):
    """The shot: frames 1..frame_count at size², a depth control unit; returns (scene, triangles)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    frames = (1, frame_count)
    scene.frame_start, scene.frame_end = frames
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    grid("ground", 20, 40, (0, 0, 0), (0, 0, 0), textured_material("ground", "ShaderNodeTexNoise"))
    grid("wall", 20, 30, (0, 4, 5), (1.5708, 0, 0), textured_material("wall", "ShaderNodeTexBrick"))
    figure(rig(frames))
    ball(frames)
    scene.camera = camera(frames)
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    scene.collection.objects.link(sun)
    settings = scene.sd_blender
    settings.prompt = "a knight walking past a stone wall, a ball rolling"
    settings.steps = steps
    settings.control_units.add().kind = "depth"
    scene.frame_set(1)
    return scene, scene_triangles(scene)


def scene_triangles(scene):
    """Triangles of the evaluated meshes at the current frame."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    total = 0
    for obj in scene.objects:
        if obj.type == "MESH":
            evaluated = obj.evaluated_get(depsgraph)
            mesh = evaluated.to_mesh()
            mesh.calc_loop_triangles()
            total += len(mesh.loop_triangles)
            evaluated.to_mesh_clear()
    return total


# The Blender side of the motion pass ---------------------------------------------------------

def seconds_of(function, *args):
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def time_motion_pass(scene, frame_count, size):
    """{what: [seconds]}: the motion pass frame after frame, its first frame, the geometry render."""
    scene.frame_set(2)
    render_geometry(scene, size, size)  # warm-up: Cycles kernels, BVH
    MotionFrames(size, size).render(scene)  # warm-up: the code paths
    motion = MotionFrames(size, size)
    seconds = {"motion": [], "geometry": []}
    for frame in range(1, frame_count + 1):
        scene.frame_set(frame)
        seconds["motion"].append(seconds_of(motion.render, scene))
        seconds["geometry"].append(seconds_of(render_geometry, scene, size, size))
    scene.frame_set(1)
    return {
        "motion pass, frame after frame (the last frame's triangles reused)": seconds["motion"][1:],
        "motion pass, first frame (nothing reused: frames N−1 and N evaluated)": seconds["motion"][:1],
        "geometry render of the same frames (depth, normal, surface ids)": seconds["geometry"],
    }


def motion_table(timings):
    rows = ["| what | frames | median ms | min–max ms |", "|---|---|---|---|"]
    for what, seconds in timings.items():
        rows.append(f"| {what} | {len(seconds)} | {statistics.median(seconds) * 1000:.0f} | "
                    f"{min(seconds) * 1000:.0f}–{max(seconds) * 1000:.0f} |")
    return rows


# Frames per second per temporal mode ---------------------------------------------------------

def job_ids(log_text):
    """The server's job ids in its access log, in order of first appearance."""
    return list(dict.fromkeys(re.findall(r"/v1/jobs/([0-9a-fA-F-]{8,})", log_text)))


def server_seconds(url, ids):
    """The sum of the jobs' run times (started_at → finished_at)."""
    total = 0.0
    for job_id in ids:
        with urllib.request.urlopen(f"{url}/v1/jobs/{job_id}", timeout=10) as response:
            status = json.load(response)
        total += (datetime.fromisoformat(status["finished_at"])
                  - datetime.fromisoformat(status["started_at"])).total_seconds()
    return total


def generate_frames(shot, mode, frame_count, steps, url, out):
    """Run the command line for one mode; returns its wall seconds (exits on failure)."""
    command = [sys.executable, "-m", "sd_blender", "generate", str(shot), "--frames", f"1-{frame_count}",
               "--temporal", mode, "--steps", str(steps), "--seed", str(SEED), "--out", str(out), "--server", url]
    started = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        status = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if status:
        sys.exit(f"{mode}: exit status {status}; see {out.with_suffix('.log')}")
    return seconds


def time_mode(server, shot, mode, frame_count, steps, folder):
    """{seconds, jobs, server seconds, the report's mean errors} of one mode."""
    already = job_ids(server.log())
    out = folder / mode
    seconds = generate_frames(shot, mode, frame_count, steps, server.url, out)
    ids = [job_id for job_id in job_ids(server.log()) if job_id not in already]
    report = json.loads((out / "frames_report.json").read_text())
    return {"seconds": seconds, "jobs": len(ids), "server": server_seconds(server.url, ids),
            "error": report["mean_warping_error"], "floor": report["mean_control_warping_error"]}


def modes_table(results, frame_count):
    rows = ["| mode | jobs | whole command s | frames/s | server's share s | mean warping error | control floor |",
            "|---|---|---|---|---|---|---|"]
    for mode, result in results.items():
        rows.append(f"| {mode} | {result['jobs']} | {result['seconds']:.1f} | {frame_count / result['seconds']:.2f} | "
                    f"{result['server']:.1f} ({result['server'] / result['seconds']:.0%}) | "
                    f"{result['error']:.2f} | {result['floor']:.2f} |")
    return rows


# ---------------------------------------------------------------------------------------------

def arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, help="frames of the shot (default 24; --quick 6)")
    parser.add_argument("--size", type=int, help="width and height (default 512; --quick 128)")
    parser.add_argument("--steps", type=int, help="steps a job (default 8; --quick 2)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated temporal modes ('': the motion pass only)")
    parser.add_argument("--quick", action="store_true", help="6 frames at 128², 2 steps: a smoke run")
    args = parser.parse_args()
    defaults = (6, 128, 2) if args.quick else (24, 512, 8)
    for name, default in zip(("frames", "size", "steps"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {', '.join(sorted(unknown))}; use {', '.join(MODES)}")
    return args


def time_modes(args):
    """Save the shot, start the server, run every mode; print the table."""
    folder = Path(BENCH_HOME) / "frames"
    folder.mkdir()
    shot = folder / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(shot))
    results = {}
    with running_server(cache_dir=Path(BENCH_HOME) / "server_cache") as server:
        # Warm-up: the server loads the model and the depth ControlNet, and runs its first plain and frame jobs.
        generate_frames(shot, "full", 2, args.steps, server.url, folder / "warm-up")
        for mode in args.modes:
            results[mode] = time_mode(server, shot, mode, args.frames, args.steps, folder)
            print(f"{mode}: {results[mode]['seconds']:.1f} s, load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\nTiny model (random weights: the warping errors say nothing of quality), {args.frames} frames at "
          f"{args.size}², {args.steps} steps, seed {SEED}, output in {folder}:")
    print(*modes_table(results, args.frames), sep="\n")


def main():
    args = arguments()
    sd_blender.register()
    scene, triangles = build_shot(args.frames, args.size, args.steps)
    print(f"Blender {bpy.app.version_string}, {args.frames} frames at {args.size}², {triangles} triangles, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(*motion_table(time_motion_pass(scene, args.frames, args.size)), sep="\n", flush=True)
    if args.modes:
        time_modes(args)
    sd_blender.unregister()  # the bpy module crashes at exit while add-on classes are still registered


if __name__ == "__main__":
    main()
