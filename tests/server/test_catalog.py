"""The catalog answers request threads while the worker runs: it is never changed, a learned
family gives a new one; and it speaks of a request's fields by their paths, knowing nothing of HTTP."""
import dataclasses

import pytest
from PIL import Image
from sd_blender_server.catalog import Catalog
from sd_blender_server.config import ServerConfig
from sd_blender_server.request import ControlInput, GenerationRequest, LoraInput

HUB_ID = "sd-blender-test/never-downloaded"  # not in any cache, and its name tells no family


@pytest.fixture
def catalog():
    return Catalog.from_config(ServerConfig(model=HUB_ID, controlnets={"depth": HUB_ID}))


def test_a_learned_family_gives_a_new_catalog_and_leaves_the_old_one_as_it_was(catalog):
    learned = catalog.with_family(HUB_ID, "sd15")
    assert learned.default_model.family == learned.controlnets["depth"].family == "sd15"
    assert learned.registry.get("base", HUB_ID).family == "sd15"
    assert catalog.default_model.family is catalog.controlnets["depth"].family is None
    assert catalog.registry.get("base", HUB_ID).family is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalog.default_model = learned.default_model
    with pytest.raises(TypeError):
        catalog.controlnets["depth"] = learned.controlnets["depth"]


def test_problems_name_the_request_fields_by_their_paths(catalog):
    image = Image.new("RGB", (8, 8))
    request = GenerationRequest(model="nope", controls=(ControlInput("foo", image),), loras=(LoraInput("style"),))
    assert [problem.path for problem in catalog.problems(request)] == [("model",), ("controls", 0, "type"), ("loras", 0, "name")]
    assert catalog.problems(GenerationRequest(controls=(ControlInput("depth", image),))) == []
