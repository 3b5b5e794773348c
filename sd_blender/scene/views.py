"""Where the views of a whole-object texture look from (docs/texturing.md):

- orbit: N views around the selection, a ring of azimuths (two rings past 10 views) plus top
  and bottom from 6 views on, framed to fit the selection's bounds;
- cameras: the user's own camera objects, as they are;
- active: the scene camera, then views chosen one by one where they see the most surface that
  the views before saw not at all or badly (next-best view by uncovered area).

Orbit and next-best views are temporary camera objects, removed when the texturing ends.
"""
import math
from contextlib import contextmanager

import bpy
import numpy as np
from mathutils import Vector

from ..core import fusion
from .texels import TexturingError, see

STRATEGIES = ("orbit", "cameras", "active")
FIELD_OF_VIEW = math.radians(40.0)
FRAMING_MARGIN = 1.08  # the bounding sphere fills the frame's shorter side but for this margin
# Next-best view candidates: rings of azimuths at these elevations (degrees), plus top and bottom;
# scored on a small render of the targets alone.
_CANDIDATE_ELEVATIONS = (-35.0, 0.0, 35.0)
_CANDIDATE_AZIMUTHS = 12
_SCORING_SIZE = 96
# A texel counts as seen well once a view saw it at least this squarely.
WELL_SEEN_COSINE = 0.5


def orbit_directions(count):
    """Unit vectors from the centre towards the cameras, the first one from the front (−Y)."""
    poles = [(0.0, 0.0, 1.0), (0.0, 0.0, -1.0)] if count >= 6 else []
    ring_count = count - len(poles)
    rings = [(15.0, ring_count)] if ring_count <= 8 else [(30.0, ring_count - ring_count // 2), (-20.0, ring_count // 2)]
    directions = []
    for elevation, azimuths in rings:
        for index in range(azimuths):
            azimuth = 2 * math.pi * index / azimuths + (math.pi / azimuths if elevation < 0 else 0.0)
            directions.append(_direction(azimuth, math.radians(elevation)))
    return directions + poles


def _direction(azimuth, elevation):
    return (
        math.sin(azimuth) * math.cos(elevation),
        -math.cos(azimuth) * math.cos(elevation),
        math.sin(elevation),
    )


def bounding_sphere(objects):
    """(centre, radius) around the evaluated bounds of the objects, in world space."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    corners = np.array([
        tuple(obj.evaluated_get(depsgraph).matrix_world @ Vector(corner))
        for obj in objects for corner in obj.evaluated_get(depsgraph).bound_box
    ])
    low, high = corners.min(axis=0), corners.max(axis=0)
    centre = (low + high) / 2
    return centre, max(float(np.linalg.norm(corners - centre, axis=1).max()), 1e-3)


@contextmanager
def temporary_cameras(scene):
    """A factory of camera objects linked to the scene, all removed afterwards."""
    made = []

    def make(name, centre, direction, radius, width, height):
        data = bpy.data.cameras.new(name)
        data.sensor_fit = 'HORIZONTAL' if width <= height else 'VERTICAL'
        data.angle = FIELD_OF_VIEW
        distance = radius * FRAMING_MARGIN / math.sin(FIELD_OF_VIEW / 2)
        data.clip_start = max(distance - radius * 2, distance * 1e-3)
        data.clip_end = distance + radius * 2
        camera = bpy.data.objects.new(name, data)
        scene.collection.objects.link(camera)
        made.append(camera)
        camera.location = Vector(centre) + Vector(direction) * distance
        camera.rotation_mode = 'QUATERNION'
        camera.rotation_quaternion = (-Vector(direction)).to_track_quat('-Z', 'Y')
        return camera

    try:
        yield make
    finally:
        for camera in made:
            data = camera.data
            bpy.data.objects.remove(camera)
            bpy.data.cameras.remove(data)


def orbit_cameras(make, objects, count, width, height):
    centre, radius = bounding_sphere(objects)
    return [
        make(f"SD View {index + 1}", centre, direction, radius, width, height)
        for index, direction in enumerate(orbit_directions(count))
    ]


def user_cameras(names):
    """The named camera objects, in order."""
    cameras = []
    for name in names:
        camera = bpy.data.objects.get(name)
        if camera is None or camera.type != 'CAMERA':
            raise TexturingError(f"there is no camera object named '{name}'")
        cameras.append(camera)
    if not cameras:
        raise TexturingError("name the cameras to use (--cameras C1,C2,...)")
    return cameras


def next_best_camera(make, objects, targets, best_cosines, width, height, index, min_gain=0.0):
    """The candidate view that sees the most surface area not yet seen well (best_cosines: per
    target, each texel's best cosine so far); None when no candidate would add more than `min_gain`."""
    centre, radius = bounding_sphere(objects)
    best_score, best_direction = min_gain, None
    for direction in _candidate_directions():
        score = _unseen_area_gained(centre, direction, radius, targets, best_cosines)
        if score > best_score:
            best_score, best_direction = score, direction
    if best_direction is None:
        return None
    return make(f"SD View {index}", centre, best_direction, radius, width, height)


def _candidate_directions():
    directions = [
        _direction(2 * math.pi * index / _CANDIDATE_AZIMUTHS, math.radians(elevation))
        for elevation in _CANDIDATE_ELEVATIONS for index in range(_CANDIDATE_AZIMUTHS)
    ]
    return directions + [(0.0, 0.0, 1.0), (0.0, 0.0, -1.0)]


def _unseen_area_gained(centre, direction, radius, targets, best_cosines):
    """Surface area this view would see better than so far (weighted by how much better), on a
    small depth map of the targets themselves (other objects are not rendered for scoring)."""
    camera = _scoring_camera(centre, direction, radius)
    distance = np.minimum.reduce([fusion.distance_alone(target.mesh, camera) for target in targets])
    gained = 0.0
    for target, best in zip(targets, best_cosines):
        samples = fusion.view_samples(target.surface, camera, distance)
        cosines, before = samples.cosines * samples.feather, best[samples.texels]
        better = cosines > np.maximum(before, WELL_SEEN_COSINE * (before > 0))
        gained += float((target.surface.areas[samples.texels] * (cosines - before))[better].sum())
    return gained


def _scoring_camera(centre, direction, radius):
    distance = radius * FRAMING_MARGIN / math.sin(FIELD_OF_VIEW / 2)
    world = (-Vector(direction)).to_track_quat('-Z', 'Y').to_matrix().to_4x4()
    world.translation = Vector(centre) + Vector(direction) * distance
    projection = fusion.perspective(FIELD_OF_VIEW, _SCORING_SIZE, _SCORING_SIZE, distance * 1e-3, distance + radius * 2)
    return fusion.Camera(np.array(world.inverted()), projection, _SCORING_SIZE, _SCORING_SIZE)


def placed_views(make, scene, strategy, count, camera_names, objects, targets, width, height):
    """The views' cameras as the strategy says (STRATEGIES; `count` views for orbit and active,
    the cameras named for cameras), and what each sees (texels.SeenView)."""
    if strategy == "cameras":
        cameras = user_cameras(camera_names)
        return cameras, [see(scene, camera, targets, width, height) for camera in cameras]
    if count < 1:
        raise TexturingError(f"at least one view is needed, not {count}")
    if strategy == "orbit":
        cameras = orbit_cameras(make, objects, count, width, height)
        return cameras, [see(scene, camera, targets, width, height) for camera in cameras]
    if scene.camera is None:
        raise TexturingError("the active strategy starts from the scene camera: the scene has none")
    cameras, views = [scene.camera], [see(scene, scene.camera, targets, width, height)]
    while len(cameras) < count:
        camera = next_best_camera(make, objects, targets, seen_well(targets, views), width, height, len(cameras) + 1)
        if camera is None:
            break
        cameras.append(camera)
        views.append(see(scene, camera, targets, width, height))
    return cameras, views


def seen_well(targets, views):
    """Per target, each texel's best cosine × frame feather over the views."""
    best = [np.zeros(len(target.surface.texels), np.float32) for target in targets]
    for view in views:
        for target_best, samples in zip(best, view.samples):
            seen_here = samples.cosines * samples.feather
            target_best[samples.texels] = np.maximum(target_best[samples.texels], seen_here)
    return best
