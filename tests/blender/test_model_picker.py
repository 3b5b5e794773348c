"""The base model and LoRA picker against a live tiny-model server whose models folder has a LoRA
for the tiny UNet (real weights, built by tests/server/model_builders.py) and one for SD 1.5."""
import re
import subprocess
from pathlib import Path

import bpy
import pytest

from conftest import REPO_ROOT
from live_server import running_server, server_command
from scenes import sphere_and_wall_scene
from sd_blender.ui import operators, panels, state
from sd_blender.ui.properties import SDBLENDER_PG_lora, SDBLENDER_PG_settings
from stand_in_layout import draw
from timers import run_timer_until_done
from waiting import wait_for

# Run by the server's Python: Blender's has no torch, diffusers or peft.
BUILD_LORAS = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/server"]
from sd_blender_server.tiny import ensure_tiny_model
from model_builders import SD15_LORA, fake_safetensors, tiny_lora
cache, loras = Path(sys.argv[2]), Path(sys.argv[3])
loras.mkdir(parents=True)
tiny_lora(ensure_tiny_model(cache) / "pipeline", loras / "tiny_style.safetensors", seed=1)
fake_safetensors(loras / "detail_sd15.safetensors", SD15_LORA)
"""

CLASH = ("LoRA 'detail_sd15' is for sd15 but base model 'tiny' is tiny: "
         "pick a LoRA for tiny or a base model for sd15, or switch the LoRA off")


def server_python():
    """The Python of the environment the server runs in (next to its console script, if given one)."""
    command = server_command()
    return command[0] if len(command) > 1 else str(Path(command[0]).with_name("python"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache, models = tmp_path_factory.mktemp("server_cache"), tmp_path_factory.mktemp("models")
    subprocess.run(
        [server_python(), "-c", BUILD_LORAS, str(REPO_ROOT / "tests"), str(cache), str(models / "loras")],
        check=True, timeout=600,
    )
    with running_server("--models-dir", str(models), cache_dir=cache) as live:
        yield live.url


@pytest.fixture
def scene(addon):
    state.reset()  # as a fresh Blender session has it
    scene = sphere_and_wall_scene(bpy.context.scene, size=64)
    scene.sd_blender.prompt, scene.sd_blender.steps = "a marble sphere", 2
    return scene


def refresh_models():
    assert bpy.ops.sd_blender.refresh_models() == {"FINISHED"}  # returns before the answer
    wait_for(lambda: not state.server_models.fetching, "the model list fetched")
    if bpy.app.timers.is_registered(operators._redraw_when_models_arrive):
        bpy.app.timers.unregister(operators._redraw_when_models_arrive)


def search(owner_class, name, edit_text=""):
    """The candidates Blender's search field would offer for a property."""
    return list(owner_class.__annotations__[name].keywords["search"](None, bpy.context, edit_text))


def add_lora(settings, name, weight=1.0, enabled=True):
    assert bpy.ops.sd_blender.add_lora() == {"FINISHED"}
    lora = settings.loras[-1]
    lora.name, lora.weight, lora.enabled = name, weight, enabled


def test_refresh_fills_the_model_and_lora_search_lists_with_families(scene, server):
    assert search(SDBLENDER_PG_settings, "base_model") == [] and search(SDBLENDER_PG_lora, "name") == []
    assert ("label", "not fetched: press Refresh") in draw(panels.SDBLENDER_PT_generate)
    refresh_models()
    assert search(SDBLENDER_PG_settings, "base_model") == [("tiny", "tiny")]
    assert sorted(search(SDBLENDER_PG_lora, "name")) == [("detail_sd15", "sd15"), ("tiny_style", "tiny")]
    assert search(SDBLENDER_PG_lora, "name", "STYLE") == [("tiny_style", "tiny")]
    drawn = draw(panels.SDBLENDER_PT_generate)
    assert ("label", f"7 ControlNets on {server}, with 1 base model and 2 LoRAs") in drawn


def test_the_model_row_draws_a_row_per_lora_with_add_and_remove(scene):
    settings = scene.sd_blender
    drawn = draw(panels.SDBLENDER_PT_generate)
    assert ("prop", "base_model") in drawn and ("operator", "sd_blender.add_lora") in drawn
    assert ("operator", "sd_blender.remove_lora") not in drawn
    add_lora(settings, "first")
    add_lora(settings, "second", weight=-0.75, enabled=False)
    drawn = draw(panels.SDBLENDER_PT_generate)
    assert drawn.count(("prop", "name")) == drawn.count(("prop", "weight")) == 2
    assert drawn.count(("operator", "sd_blender.remove_lora")) == 2
    assert bpy.ops.sd_blender.remove_lora(index=0) == {"FINISHED"}
    assert [(lora.name, lora.weight, lora.enabled) for lora in settings.loras] == [("second", -0.75, False)]
    with pytest.raises(RuntimeError, match="there is no LoRA 1 to remove"):
        bpy.ops.sd_blender.remove_lora(index=1)


def test_the_chosen_model_and_the_enabled_loras_reach_the_server(scene):
    settings = scene.sd_blender
    settings.base_model = "tiny"
    add_lora(settings, "tiny_style", weight=0.5)
    add_lora(settings, "detail_sd15", enabled=False)  # for SD 1.5, but switched off: no clash
    add_lora(settings, "")  # a row with no LoRA chosen yet
    refresh_models()
    assert ("operator", "sd_blender.generate") in draw(panels.SDBLENDER_PT_generate)
    assert bpy.ops.sd_blender.generate() == {"FINISHED"}
    snapshot = run_timer_until_done().job.snapshot()
    assert snapshot.state == "done", snapshot.message
    assert snapshot.parameters["model"] == "tiny"
    assert snapshot.parameters["loras"] == [{"name": "tiny_style", "weight": 0.5}]


def test_a_lora_for_another_family_is_reported_before_the_passes_are_rendered(scene):
    settings = scene.sd_blender
    settings.control_units.add().kind = "depth"
    add_lora(settings, "detail_sd15")
    refresh_models()
    assert ("label", CLASH) in draw(panels.SDBLENDER_PT_generate)
    before = state.generation.active
    with pytest.raises(RuntimeError, match=re.escape(CLASH)):
        bpy.ops.sd_blender.generate()
    assert state.generation.active is before  # nothing was sent
    settings.loras[0].enabled = False
    assert ("label", CLASH) not in draw(panels.SDBLENDER_PT_generate)


@pytest.mark.parametrize(
    ("model", "lora", "message"),
    [
        ("nope", None, "server answered 422: model: no base model named 'nope'; this server has tiny"),
        ("", "detail_sd15",
         "server answered 422: loras[0].name: LoRA 'detail_sd15' is for sd15 but model 'tiny' is tiny"),
    ],
)
def test_what_the_server_refuses_is_shown_under_the_generate_button(scene, model, lora, message):
    settings = scene.sd_blender
    settings.base_model = model
    if lora:
        add_lora(settings, lora)
    assert bpy.ops.sd_blender.generate() == {"FINISHED"}  # the list was not fetched: the server checks
    active = run_timer_until_done()
    assert active.job.snapshot().state == "failed"
    assert active.outcome == message
    assert ("label", message) in draw(panels.SDBLENDER_PT_generate)
