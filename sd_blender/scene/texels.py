"""What whole-object texturing reads from the scene: the meshes' triangles in the UV map baked
into (the active one when it can take a bake, else "SD Bake" made by Smart UV Project), the
views' cameras as matrices, and what each view sees (one geometry render: its distances)."""
from contextlib import contextmanager
from dataclasses import dataclass

import bpy
import numpy as np

from ..core import fusion
from .apply import as_scene_camera, kept_active_uv_maps, own_uv_layer, require_editable_mesh
from .passes import render_geometry

BAKE_UV_NAME = "SD Bake"
# Smart UV Project's island margin, as a fraction of the UV square: room for the islands' filled
# borders, so bilinear filtering and mipmaps never mix two islands.
ISLAND_MARGIN = 0.02


class TexturingError(ValueError):
    """The objects cannot be textured as asked; the message says what to fix."""


@dataclass
class Target:
    """Meshes sharing one texture: their names, the UV map baked into, their triangles (world
    space, evaluated), the texture's side and the texels the views are fused in (at most as fine
    as the texture)."""

    names: list
    uv_name: str
    mesh: fusion.Mesh
    size: int
    surface: fusion.TexelSurface


def texture_targets(objects, uv_name, size, shared, view_side=None):
    """One Target per object (objects sharing a mesh share one, baked from the first of them), or
    one for all of them when `shared` (their islands must not overlap each other). `uv_name`: the UV map to bake into (None: the active one if it can
    take a bake, else "SD Bake", made once). Views `view_side` pixels across are fused at
    fusion.fusion_size(size, view_side) texels, then the texture is sized up."""
    uv_names = bake_uv_names(objects, uv_name)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    meshes = {obj.name: world_mesh(obj, depsgraph, uv_names[obj.name]) for obj in objects}
    if shared:
        mesh = _joined([meshes[obj.name] for obj in objects])
        if len(objects) > 1 and fusion.usable_for_baking(mesh) is not None:
            raise TexturingError(
                f"the UV islands of {', '.join(obj.name for obj in objects)} overlap each other: "
                "bake them one at a time (or lay them out in one UV space)"
            )
        groups = [([obj.name for obj in objects], mesh)]
    else:
        groups = [([obj.name for obj in group], meshes[group[0].name]) for group in _by_mesh(objects)]
    surface_size = fusion.fusion_size(size, view_side)
    return [Target(names, uv_names[names[0]], mesh, size, fusion.texel_surface(mesh, surface_size))
            for names, mesh in groups]


def _by_mesh(objects):
    """The objects grouped by the mesh they share (linked duplicates share its materials, so one
    texture, baked from the first of them, shows on all)."""
    groups = {}
    for obj in objects:
        groups.setdefault(obj.data.as_pointer(), []).append(obj)
    return list(groups.values())


def bake_uv_names(objects, uv_name):
    """{object name: the UV map it is baked into}, making "SD Bake" where it is needed."""
    for obj in objects:
        _require_mesh(obj)
    return {obj.name: _bake_uv_name(obj, uv_name) for obj in objects}


def _require_mesh(obj):
    require_editable_mesh(obj)
    if len(obj.data.polygons) == 0:
        raise TexturingError(f"'{obj.name}' has no faces to texture")


def _bake_uv_name(obj, uv_name):
    mesh = obj.data
    if uv_name is not None:
        if uv_name not in mesh.uv_layers:
            names = ", ".join(layer.name for layer in mesh.uv_layers) or "none"
            raise TexturingError(f"'{obj.name}' has no UV map '{uv_name}' (it has: {names})")
        problem = fusion.usable_for_baking(_uv_mesh(mesh, uv_name))
        if problem is not None:
            raise TexturingError(f"cannot bake into UV map '{uv_name}' of '{obj.name}': {problem}")
        return uv_name
    active = mesh.uv_layers.active
    if active is not None and active.name != BAKE_UV_NAME and fusion.usable_for_baking(_uv_mesh(mesh, active.name)) is None:
        return active.name
    if BAKE_UV_NAME not in mesh.uv_layers:
        _smart_uv_project(obj, own_uv_layer(mesh, BAKE_UV_NAME))
    return BAKE_UV_NAME


def _uv_mesh(mesh, uv_name):
    """The original mesh's triangles in one UV map (positions and normals unused: zeros)."""
    mesh.calc_loop_triangles()
    loops = _loop_triangle_loops(mesh)
    uvs = _loop_uvs(mesh, uv_name)[loops]
    zeros = np.zeros(loops.shape + (3,), np.float32)
    return fusion.Mesh(uvs, zeros, zeros)


def world_mesh(obj, depsgraph, uv_name):
    """The evaluated object's triangles: UVs of `uv_name`, world positions and world corner normals."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        if uv_name not in mesh.uv_layers:
            raise TexturingError(f"the modifiers of '{obj.name}' drop its UV map '{uv_name}'")
        mesh.calc_loop_triangles()
        loops = _loop_triangle_loops(mesh)
        loop_vertices = np.empty(len(mesh.loops), np.int32)
        mesh.loops.foreach_get("vertex_index", loop_vertices)
        positions = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", positions)
        normals = np.empty(len(mesh.loops) * 3, np.float32)
        mesh.corner_normals.foreach_get("vector", normals)
        uvs = _loop_uvs(mesh, uv_name)
    finally:
        evaluated.to_mesh_clear()
    matrix = np.array(evaluated.matrix_world)
    world_positions = positions.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    world_normals = normals.reshape(-1, 3) @ np.linalg.inv(matrix[:3, :3])  # the inverse transpose
    world_normals /= np.maximum(np.linalg.norm(world_normals, axis=1, keepdims=True), 1e-12)
    return fusion.Mesh(uvs[loops], world_positions[loop_vertices[loops]], world_normals[loops])


def _loop_triangle_loops(mesh):
    loops = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("loops", loops)
    return loops.reshape(-1, 3)


def _loop_uvs(mesh, uv_name):
    uvs = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers[uv_name].uv.foreach_get("vector", uvs)
    return uvs.reshape(-1, 2)


def _joined(meshes):
    return fusion.Mesh(*(np.concatenate([getattr(mesh, part) for mesh in meshes]) for part in ("uvs", "positions", "normals")))


# ----------------------------------------------------------------------- Smart UV Project


def _smart_uv_project(obj, uv_layer):
    """Unwrap the whole mesh into `uv_layer` with Smart UV Project, leaving the user's active UV
    map, selection, hidden faces, active object and mode as they were."""
    mesh = obj.data
    view_layer = bpy.context.view_layer
    with kept_active_uv_maps(mesh), _kept_mesh_flags(mesh), _kept_selection(view_layer):
        mesh.uv_layers.active = uv_layer
        for other in view_layer.objects:
            other.select_set(False)
        obj.hide_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        bpy.ops.object.mode_set(mode='EDIT')
        try:
            bpy.ops.mesh.reveal(select=False)
            bpy.ops.mesh.select_all(action='SELECT')
            bpy.ops.uv.smart_project(island_margin=ISLAND_MARGIN, scale_to_bounds=False)
        finally:
            bpy.ops.object.mode_set(mode='OBJECT')


@contextmanager
def _kept_mesh_flags(mesh):
    """The select and hide flags of the mesh's vertices, edges and faces, put back afterwards."""
    saved = []
    for elements in (mesh.vertices, mesh.edges, mesh.polygons):
        for flag in ("select", "hide"):
            values = np.empty(len(elements), bool)
            elements.foreach_get(flag, values)
            saved.append((elements, flag, values))
    try:
        yield
    finally:
        for elements, flag, values in saved:
            elements.foreach_set(flag, values)
        mesh.update()


@contextmanager
def _kept_selection(view_layer):
    selected = [obj for obj in view_layer.objects if obj.select_get()]
    hidden = [obj for obj in view_layer.objects if obj.hide_get()]
    active = view_layer.objects.active
    try:
        yield
    finally:
        for obj in view_layer.objects:
            obj.select_set(obj in selected)
            obj.hide_set(obj in hidden)
        view_layer.objects.active = active


# ------------------------------------------------------------------------------- the views


def view_camera(camera_object, width, height, depsgraph=None):
    """The camera as fusion.Camera for a width × height frame (evaluated: parents, constraints),
    in `depsgraph` (default: the context's)."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    evaluated = camera_object.evaluated_get(depsgraph)
    projection = evaluated.calc_matrix_camera(depsgraph, x=width, y=height, scale_x=1.0, scale_y=1.0)
    return fusion.Camera(np.array(evaluated.matrix_world.inverted()), np.array(projection), width, height)


@dataclass
class SeenView:
    """A view of the targets: its camera and, per target, where the texels fall (samples) and
    what each pixel shows (map)."""

    camera: fusion.Camera
    samples: list
    maps: list


def see(scene, camera_object, targets, width, height):
    """Render what the camera sees (distances: other objects hide the targets too) and relate it
    to the targets' texels."""
    with as_scene_camera(scene, camera_object):
        distance = render_geometry(scene, width, height).distance
    camera = view_camera(camera_object, width, height)
    samples = [fusion.view_samples(target.surface, camera, distance) for target in targets]
    maps = [fusion.view_map(target.mesh, camera, distance) for target in targets]
    return SeenView(camera, samples, maps)
