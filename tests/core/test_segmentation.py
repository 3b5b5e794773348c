import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sd_blender.core.segmentation import (
    ADE20K_CLASSES, ADE20K_PALETTE, class_from_override, class_in_name, resolve_class, segmentation_image,
)


def colour(index):
    return tuple(int(c) for c in ADE20K_PALETTE[index])


def test_classes_and_colours_in_the_annotator_order():
    assert len(ADE20K_CLASSES) == 150 and ADE20K_PALETTE.shape == (150, 3)
    expected = {"wall": (120, 120, 120), "building": (180, 120, 120), "sky": (6, 230, 230),
                "floor": (80, 50, 50), "tree": (4, 200, 3), "person": (150, 5, 61), "flag": (92, 0, 255)}
    for name, rgb in expected.items():
        assert colour(ADE20K_CLASSES.index(name)) == rgb


@pytest.mark.parametrize("name, expected", [
    ("Wall", "wall"), ("Floor.001", "floor"), ("ground", "earth"), ("ground_plane", "floor"), ("WoodenCrate", "box"),
    ("Cube", "box"), ("Character", "person"), ("Table Lamp", "lamp"), ("CoffeeTable", "coffee table"),
    ("chairs", "chair"), ("Trees.002", "tree"), ("PoolTable", "pool table"),
])
def test_names_are_matched_to_classes_and_synonyms(name, expected):
    assert class_in_name(name) == ADE20K_CLASSES.index(expected)


def test_unknown_names_match_nothing():
    assert class_in_name("Object.001") is None
    assert class_in_name("Barrelhouse") is None  # whole words only


def test_rules_in_order_overrides_object_name_material_name_rig_fallback():
    index = ADE20K_CLASSES.index
    assert resolve_class("Crate", "Grass", object_override="tree", material_override="rug") == index("tree")
    assert resolve_class("Crate", "Grass", material_override="rug") == index("rug")
    assert resolve_class("Crate", "Grass") == index("box")
    assert resolve_class("Object", "Grass") == index("grass")
    assert resolve_class("Object", "Material", rigged=True) == index("person")
    assert resolve_class("Object", "Material") == index("wall")


def test_an_override_takes_class_names_or_synonyms_and_rejects_others():
    assert class_from_override(" Chest of Drawers ") == ADE20K_CLASSES.index("chest of drawers")
    assert class_from_override("ground") == ADE20K_CLASSES.index("earth")
    with pytest.raises(ValueError, match="not an ADE20K class"):
        class_from_override("spaceship")


def test_image_colours_and_sky_background():
    image = segmentation_image(np.array([[0, 3], [-1, 12]]))
    assert image.dtype == np.uint8
    assert [tuple(image[0, 0]), tuple(image[0, 1]), tuple(image[1, 0]), tuple(image[1, 1])] == [
        (120, 120, 120), (80, 50, 50), (6, 230, 230), (150, 5, 61)]


def reference_ade_palette():
    """controlnet_aux's ade_palette(), read from its source: importing the package needs torch
    and more."""
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None:
        pytest.skip("controlnet_aux is not installed")
    source = Path(spec.origin).with_name("util.py").read_text()
    function = next(node for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.FunctionDef) and node.name == "ade_palette")
    return ast.literal_eval(function.body[-1].value)


def test_palette_is_the_seg_annotators():
    assert ADE20K_PALETTE.tolist() == reference_ade_palette()
