"""The segmentation pass: ADE20K colours per object and material, probed at known pixels."""
import math

import bpy
import numpy as np
import pytest

from scenes import add_camera, add_cube, instance_collection, instance_with_geometry_nodes, pixel_of, set_resolution
from sd_blender.scene.passes import PassError, render_control_images

SIZE = 128
WALL, FLOOR, BOX, SKY, PERSON, TREE, RUG, GRASS = (
    (120, 120, 120), (80, 50, 50), (0, 255, 20), (6, 230, 230), (150, 5, 61), (4, 200, 3), (255, 9, 92), (4, 250, 7))


def seg(scene):
    return render_control_images(scene, ["seg"], SIZE, SIZE)["seg"]


def colour_at(image, scene, world_point):
    return tuple(int(c) for c in image[pixel_of(scene, world_point)])


@pytest.fixture
def room(empty_scene):
    """A wall at the back, a floor below, a crate in front; the sky shows above the wall."""
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    add_cube("Wall", size=1.0, location=(0.0, 5.0, 0.0)).scale = (8.0, 1.0, 3.0)
    bpy.ops.mesh.primitive_plane_add(size=8.0, location=(0.0, 0.0, -1.5))
    bpy.context.active_object.name = "Floor"
    add_cube("Crate", size=1.0, location=(1.0, 0.0, -1.0))
    return empty_scene


@pytest.fixture
def override_properties():
    """The per-object and per-material class properties, as the add-on registers them."""
    owners = [owner for owner in (bpy.types.Object, bpy.types.Material) if not hasattr(owner, "sd_blender_seg_class")]
    for owner in owners:
        owner.sd_blender_seg_class = bpy.props.StringProperty()
    yield
    for owner in owners:
        del owner.sd_blender_seg_class


def test_objects_get_the_colour_of_the_class_their_name_says(room):
    image = seg(room)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert colour_at(image, room, (-2.0, 4.5, 0.5)) == WALL
    assert colour_at(image, room, (-2.0, -1.0, -1.5)) == FLOOR
    assert colour_at(image, room, (1.0, -0.5, -1.0)) == BOX
    assert colour_at(image, room, (0.0, 4.5, 3.0)) == SKY  # above the wall: nothing hit


def test_a_material_name_counts_when_the_object_name_says_nothing(room):
    floor = bpy.data.objects["Floor"]
    floor.name = "Slab"
    floor.data.materials.append(bpy.data.materials.new("Lawn"))
    assert colour_at(seg(room), room, (-2.0, -1.0, -1.5)) == GRASS


def test_each_material_of_an_object_gets_its_own_class(empty_scene, override_properties):
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    bpy.ops.mesh.primitive_plane_add(size=4.0, rotation=(math.radians(90), 0.0, 0.0))
    panel = bpy.context.active_object
    panel.name = "Panel"
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.subdivide()  # 4 faces: two on the left, two on the right
    bpy.ops.object.mode_set(mode="OBJECT")
    for name in ("Carpet", "Grass"):
        panel.data.materials.append(bpy.data.materials.new(name))
    for polygon in panel.data.polygons:
        polygon.material_index = 0 if polygon.center.x < 0 else 1
    image = seg(empty_scene)
    assert colour_at(image, empty_scene, (-1.0, 0.0, 0.5)) == RUG
    assert colour_at(image, empty_scene, (1.0, 0.0, 0.5)) == GRASS
    bpy.data.materials["Grass"].sd_blender_seg_class = "tree"
    assert colour_at(seg(empty_scene), empty_scene, (1.0, 0.0, 0.5)) == TREE


def test_an_object_override_beats_its_name_and_materials(room, override_properties):
    crate = bpy.data.objects["Crate"]
    crate.data.materials.append(bpy.data.materials.new("Grass"))
    bpy.data.materials["Grass"].sd_blender_seg_class = "rug"
    crate.sd_blender_seg_class = "Person"
    assert colour_at(seg(room), room, (1.0, -0.5, -1.0)) == PERSON


def test_an_override_that_is_no_class_says_which_object(room, override_properties):
    bpy.data.objects["Crate"].sd_blender_seg_class = "spaceship"
    with pytest.raises(PassError, match='"Crate".*spaceship.*not an ADE20K class'):
        seg(room)


def test_a_mesh_deformed_by_an_armature_is_a_person(room):
    crate = bpy.data.objects["Crate"]
    crate.name = "Mesh"
    crate.modifiers.new("Armature", "ARMATURE").object = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    assert colour_at(seg(room), room, (1.0, -0.5, -1.0)) == PERSON


def test_unmatched_objects_are_wall(room):
    bpy.data.objects["Crate"].name = "Object"
    assert colour_at(seg(room), room, (1.0, -0.5, -1.0)) == WALL


def test_instances_show_with_their_class(empty_scene):
    """A collection instance takes its source object's class; a geometry-nodes instance, the
    class of the object carrying the modifier."""
    set_resolution(empty_scene, SIZE, SIZE)
    add_camera(empty_scene)
    source = add_cube("Crate", size=1.0)
    instance_collection(empty_scene, source, "Thing 1", (-2.0, 0.0, 0.0))
    instance_with_geometry_nodes(empty_scene, source, "Trees", (2.0, 0.0, 0.0))
    image = seg(empty_scene)
    assert colour_at(image, empty_scene, (-2.0, -0.5, 0.0)) == BOX
    assert colour_at(image, empty_scene, (2.0, -0.5, 0.0)) == TREE


def test_user_data_is_left_as_it_was(room, override_properties):
    bpy.data.objects["Crate"].sd_blender_seg_class = "box"
    bpy.data.objects["Wall"]["user_note"] = 7
    before = {obj.name: sorted(obj.keys()) for obj in bpy.data.objects}
    materials, node_groups = sorted(bpy.data.materials.keys()), sorted(bpy.data.node_groups.keys())
    render_control_images(room, ["seg", "depth", "normal", "lineart"], SIZE, SIZE)
    assert {obj.name: sorted(obj.keys()) for obj in bpy.data.objects} == before
    assert sorted(bpy.data.materials.keys()) == materials and sorted(bpy.data.node_groups.keys()) == node_groups
    assert bpy.data.objects["Wall"]["user_note"] == 7
    assert all(layer.material_override is None for layer in room.view_layers)
