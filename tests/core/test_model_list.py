"""The server's models as the panel's search lists offer them, and its limits, fetched from a live
server off the calling thread."""
import sys
from pathlib import Path

import pytest

from live_server import running_server
from sd_blender.core.client import ServerClient
from sd_blender.core.model_list import ModelList

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
# LoRA-shaped safetensors files, as the registry tests build them.
from model_builders import SD15_LORA, TINY_METADATA, fake_safetensors as _fake  # noqa: E402


def test_refresh_lists_the_servers_controlnets_with_the_units_type_first(client):
    models = ModelList()
    assert models.names() == [] and "Refresh" in models.status
    models.refresh(client).join(timeout=30)
    assert models.names("depth") == ["tiny"]  # every tiny ControlNet has the one name
    assert models.status == f"7 ControlNets on {client.base_url}, with 1 base model and 0 LoRAs"
    assert models.base_models() == [("tiny", "tiny")] and models.loras() == []


def test_refresh_brings_the_limits_the_running_server_enforces(tiny_cache):
    models = ModelList()
    assert models.limits is None
    with running_server("--max-pixels", "262144", "--max-queue", "3", cache_dir=tiny_cache) as live:
        models.refresh(ServerClient(live.url)).join(timeout=30)
    assert models.limits["max_pixels"] == 262144 and models.limits["max_queue"] == 3
    assert models.limits["lora_weight"] == {"min": -4.0, "max": 4.0}


def test_an_unreachable_server_is_reported_in_the_status():
    models = ModelList()
    models.refresh(ServerClient("http://127.0.0.1:9", timeout=2)).join(timeout=30)
    assert models.names() == [] and models.base_models() == [] and models.loras() == []
    assert models.status.startswith("cannot reach the sd_blender server at http://127.0.0.1:9")


@pytest.fixture(scope="module")
def lora_models(tiny_cache, tmp_path_factory):
    """The list fetched from a server whose models folder has a LoRA for the tiny model and one for SD 1.5."""
    loras = tmp_path_factory.mktemp("models") / "loras"
    _fake(loras / "tiny_style.safetensors", SD15_LORA, TINY_METADATA)
    _fake(loras / "detail_sd15.safetensors", SD15_LORA)
    models = ModelList()
    with running_server("--models-dir", str(loras.parent), cache_dir=tiny_cache) as live:
        models.refresh(ServerClient(live.url)).join(timeout=30)
    return models


def test_loras_are_listed_with_their_family(lora_models):
    assert sorted(lora_models.loras()) == [("detail_sd15", "sd15"), ("tiny_style", "tiny")]
    assert lora_models.status.endswith("with 1 base model and 2 LoRAs")


@pytest.mark.parametrize("model", [None, "", "tiny"])
def test_a_lora_for_another_family_than_the_base_model_says_what_to_fix(lora_models, model):
    assert lora_models.lora_family_problem(model, ["tiny_style"]) is None
    assert lora_models.lora_family_problem(model, ["tiny_style", "detail_sd15"]) == (
        "LoRA 'detail_sd15' is for sd15 but base model 'tiny' is tiny: "
        "pick a LoRA for tiny or a base model for sd15, or switch the LoRA off"
    )


def test_names_the_list_does_not_know_are_left_to_the_server(lora_models):
    assert lora_models.lora_family_problem("elsewhere", ["detail_sd15"]) is None
    assert lora_models.lora_family_problem(None, ["not_listed"]) is None
    assert ModelList().lora_family_problem(None, ["detail_sd15"]) is None  # not fetched yet
