"""The motion pass of the scene's current frame: where each pixel's surface was one frame
earlier, from the evaluated triangles and the scene camera of both frames (core.motion does the
geometry, docs/conventions.md shows the convention).

Every object instance with geometry that renders (meshes, curves, text, metaballs, instances of
collections) counts, evaluated as the viewport evaluates it (its modifiers' viewport settings);
an object hidden in the viewport but rendered is shown while the frames are evaluated.
A surface is followed from one frame to the other when it has the same triangles in both (an
armature, shape keys, a deforming modifier keep them; a modifier that changes its topology
between the frames does not): elsewhere the pixels are marked occluded.
"""
import os
from contextlib import contextmanager

import bpy
import numpy as np

from ..core.motion import FrameView, motion_pass
from ..core.png import write_png
from ..core.warp import write_motion
from .texels import view_camera

_GEOMETRY_TYPES = {"MESH", "CURVE", "SURFACE", "FONT", "META"}


class MotionFrames:
    """Motion passes of a scene's frames at width × height. Of consecutive frames, the one before
    is not evaluated and rasterised again: the last frame's triangles and depth serve the next."""

    def __init__(self, width, height):
        self.width, self.height = width, height
        self._last = None  # (frame, FrameView, triangle ranges, nearest distance per pixel)

    def render(self, scene):
        """core.motion.MotionPass of the scene's current frame back to the frame before it; the
        scene is left at its current frame."""
        frame = scene.frame_current
        with _rendered_objects_shown(scene):
            before, before_triangles, before_distance, now, now_triangles = self._evaluate(scene, frame)
        result = motion_pass(now, before, _counterparts(now_triangles, before_triangles), before_distance)
        self._last = (frame, now, now_triangles, result.distance)
        return result

    def _evaluate(self, scene, frame):
        """The frame before (from the last frame when it was that one) and this frame, evaluated."""
        try:
            if self._last is not None and self._last[0] == frame - 1:
                before, before_triangles, before_distance = self._last[1:]
            else:
                scene.frame_set(frame - 1)
                (before, before_triangles), before_distance = self._frame_view(scene), None
            scene.frame_set(frame)
            now, now_triangles = self._frame_view(scene)
        finally:
            scene.frame_set(frame)
        return before, before_triangles, before_distance, now, now_triangles

    def _frame_view(self, scene):
        return _frame_view(scene, self.width, self.height)


def render_motion(scene, width, height):
    """core.motion.MotionPass of the scene's current frame back to the frame before it."""
    return MotionFrames(width, height).render(scene)


def motion_paths(folder, frame):
    """The motion pass files of a frame: motion_NNNN.exr and occlusion_NNNN.png."""
    return os.path.join(folder, f"motion_{frame:04d}.exr"), os.path.join(folder, f"occlusion_{frame:04d}.png")


def write_motion_files(scene, frames, folder):
    """Write the current frame's motion (EXR, channels X and Y) and occlusion mask (white where
    occluded), rendered by `frames` (MotionFrames), into folder; returns both paths."""
    result = frames.render(scene)
    motion_path, occlusion_path = motion_paths(folder, scene.frame_current)
    write_motion(motion_path, result.motion)
    write_png(occlusion_path, np.where(result.occluded, 255, 0).astype(np.uint8))
    return motion_path, occlusion_path


def _view_layer(scene):
    return bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]


@contextmanager
def _rendered_objects_shown(scene):
    """Objects that render but are hidden in the viewport (the eye, Disable in Viewports) shown
    while the frames are evaluated: the view layer's depsgraph holds only what the viewport shows."""
    view_layer = _view_layer(scene)
    rendered = [obj for obj in scene.objects if not obj.hide_render]
    eye_closed = [obj for obj in rendered if obj.hide_get(view_layer=view_layer)]
    disabled = [obj for obj in rendered if obj.hide_viewport]
    try:
        for obj in eye_closed:
            obj.hide_set(False, view_layer=view_layer)
        for obj in disabled:
            obj.hide_viewport = False
        yield
    finally:
        for obj in eye_closed:
            obj.hide_set(True, view_layer=view_layer)
        for obj in disabled:
            obj.hide_viewport = True


def _depsgraph(scene):
    depsgraph = _view_layer(scene).depsgraph
    depsgraph.update()
    return depsgraph


def _frame_view(scene, width, height):
    """The frame's FrameView and the triangle ranges of each instance: {key: (first, count)}."""
    depsgraph = _depsgraph(scene)
    ranges, corners, first = {}, [], 0
    for key, instance_corners in _instance_triangles(depsgraph):
        ranges[key] = (first, len(instance_corners))
        corners.append(instance_corners)
        first += len(instance_corners)
    corners = np.concatenate(corners) if corners else np.zeros((0, 3, 3))
    camera = view_camera(scene.camera, width, height, depsgraph)
    return FrameView(corners, camera, scene.camera.data.clip_start), ranges


def _instance_triangles(depsgraph):
    """(key, (T, 3, 3) world corners) of every rendered instance with geometry; the key names the
    same instance in every frame."""
    for instance in depsgraph.object_instances:
        obj = instance.object
        if obj.type not in _GEOMETRY_TYPES or obj.original.hide_render or not instance.show_self:
            continue
        key = (obj.original.name, tuple(instance.persistent_id) if instance.is_instance else ())
        corners = _world_triangles(obj, np.array(instance.matrix_world))
        if len(corners):
            yield key, corners


def _world_triangles(obj, matrix):
    mesh = obj.to_mesh()
    try:
        mesh.calc_loop_triangles()
        positions = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", positions)
        triangles = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("vertices", triangles)
    finally:
        obj.to_mesh_clear()
    world = positions.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    return world[triangles.reshape(-1, 3)]


def _counterparts(now_ranges, before_ranges):
    """For each triangle of frame N its index in frame N−1; −1 where its instance is not there
    or has other triangles."""
    counterparts = np.full(sum(count for _, count in now_ranges.values()), -1, np.int64)
    for key, (first, count) in now_ranges.items():
        before_first, before_count = before_ranges.get(key, (0, -1))
        if before_count == count:
            counterparts[first:first + count] = np.arange(before_first, before_first + count)
    return counterparts
