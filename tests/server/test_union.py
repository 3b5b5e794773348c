"""The SDXL ControlNet Union model: one ControlNet serving several control types, each by its
control mode, built here as a toy (random weights, real diffusers classes) for a toy SDXL."""
import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from live_server import running_server
from safetensors.torch import save_file
from sd_blender_server.registry import UNION_FILE_REASON
from sd_blender_server.tiny import ensure_tiny_model
from model_builders import inpainting_folder, toy_sdxl_folders, toy_union
from server_helpers import field_error, fetch_image, png_base64, run_job, submit, wait_finished


@pytest.fixture(scope="module")
def union_models(tiny_cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("union")
    toy_sdxl_folders(ensure_tiny_model(tiny_cache), root / "models")
    checkpoints = root / "models" / "checkpoints"
    inpainting_folder(checkpoints / "toy-xl", checkpoints / "toy-xl-inpainting")
    unet = checkpoints / "toy-xl" / "unet"
    toy_union(unet, root / "models" / "controlnet" / "toy_union_promax", num_control_type=8)
    toy_union(unet, root / "served_union", num_control_type=6)
    return root


@pytest.fixture(scope="module")
def union_client(union_models, tiny_cache):
    served = str(union_models / "served_union")
    with running_server("--models-dir", str(union_models), "--controlnet", f"union={served}", cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=120) as client:
            yield client


JOB = {"model": "toy-xl", "width": 64, "height": 64, "steps": 2, "seed": 11}


def _gradient(width=64, height=64) -> str:
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([ramp, ramp[::-1], ramp.T], axis=-1)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _pixels(client, **body) -> np.ndarray:
    status = run_job(client, **{**JOB, **body})
    return np.asarray(fetch_image(client, status["images"][0]), dtype=np.int16)


def test_models_lists_union_controlnets_with_the_types_they_serve(union_client):
    models = union_client.get("/v1/models").json()
    controlnets = {Path(item["name"]).name: item for item in models["controlnets"]}
    served, found = controlnets["served_union"], controlnets["toy_union_promax"]
    assert (served["type"], served["family"], served["source"]) == ("union", "sdxl", "folder")
    assert (found["type"], found["family"]) == ("union", "sdxl")
    for item in (served, found):
        assert item["types"] == ["openpose", "depth", "lineart", "canny", "normal", "seg", "tile"]
    # The Union model replaces the default (tiny) ControlNets.
    assert not [item for item in models["controlnets"] if item["source"] == "tiny"]


def test_each_control_type_runs_on_the_union_model_in_its_own_mode(union_client):
    image = _gradient()
    plain = _pixels(union_client)
    depth = _pixels(union_client, controls=[{"type": "depth", "image": image}])
    pose = _pixels(union_client, controls=[{"type": "openpose", "image": image}])
    both = _pixels(union_client, controls=[{"type": "depth", "image": image}, {"type": "openpose", "image": image}])
    # The same image in another mode is another control; two controls are neither of them alone.
    for first, second in ((plain, depth), (depth, pose), (both, depth), (both, pose)):
        assert np.abs(first - second).mean() > 1.0
    status = run_job(union_client, **JOB, controls=[{"type": "depth", "image": image, "weight": 0.5}])
    assert Path(status["parameters"]["controls"][0]["model"]).name == "served_union"


def test_union_weight_and_range_and_img2img(union_client):
    image = _gradient()
    full = _pixels(union_client, controls=[{"type": "normal", "image": image, "weight": 1.0}])
    half = _pixels(union_client, controls=[{"type": "normal", "image": image, "weight": 0.5}])
    none = _pixels(union_client, controls=[{"type": "normal", "image": image, "weight": 0.0}])
    plain = _pixels(union_client)
    assert np.abs(full - half).mean() > 1.0
    assert np.abs(none - plain).max() <= 1
    late = _pixels(union_client, controls=[{"type": "normal", "image": image, "start": 0.5, "end": 1.0}])
    assert np.abs(late - full).mean() > 1.0
    init = png_base64(64, 64, (200, 40, 40))
    _pixels(union_client, controls=[{"type": "seg", "image": image}], init_image=init, strength=0.5)


def test_union_inpainting_keeps_what_the_mask_keeps(union_client):
    init = _gradient()
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, :32] = 255
    mask_png = io.BytesIO()
    Image.fromarray(mask).save(mask_png, format="PNG")
    body = {"init_image": init, "mask_image": base64.b64encode(mask_png.getvalue()).decode(), "strength": 0.9}
    pixels = _pixels(union_client, controls=[{"type": "depth", "image": _gradient()}], **body)
    original = np.asarray(Image.open(io.BytesIO(base64.b64decode(init))), dtype=np.int16)
    assert np.array_equal(pixels[:, 32:], original[:, 32:])
    assert np.abs(pixels[:, :32] - original[:, :32]).mean() > 20
    # diffusers' Union inpainting takes 4-channel UNets only.
    refused = wait_finished(
        union_client,
        submit(union_client, **{**JOB, **body, "model": "toy-xl-inpainting", "controls": [{"type": "depth", "image": init}]}),
    )
    assert refused["state"] == "failed"
    assert "a ControlNet Union model cannot inpaint with an inpainting checkpoint" in refused["error"]


def test_a_union_model_named_from_the_models_folder_runs_tile(union_client):
    tile = {"type": "tile", "model": "toy_union_promax", "image": _gradient()}
    status = run_job(union_client, **JOB, controls=[tile])
    assert status["parameters"]["controls"][0]["model"] == "toy_union_promax"


def test_tile_on_a_union_model_without_its_mode_fails_with_the_reason(union_client):
    status = wait_finished(union_client, submit(union_client, **JOB, controls=[{"type": "tile", "image": _gradient()}]))
    assert status["state"] == "failed"
    assert "has 6 control modes, none for 'tile'" in status["error"]
    assert union_client.get("/health").json()["status"] == "ok"


def test_a_union_model_does_not_mix_with_other_controlnets(union_client):
    image = _gradient()
    mixed = [{"type": "depth", "image": image}, {"type": "openpose", "model": "toy_union_promax", "image": image}]
    message = field_error(union_client.post("/v1/jobs", json={**JOB, "controls": mixed}), "controls")
    assert "a ControlNet Union model runs alone" in message
    scribble = [{"type": "scribble", "image": image}]
    message = field_error(union_client.post("/v1/jobs", json={**JOB, "controls": scribble}), "controls[0].type")
    assert "no ControlNet for 'scribble'" in message
    # The Union model is SDXL: the tiny (SD 1.5-shaped) base model refuses it.
    on_tiny = {**JOB, "model": None, "controls": [{"type": "depth", "image": image}]}
    message = field_error(union_client.post("/v1/jobs", json=on_tiny), "controls[0].type")
    assert message.endswith("is for sdxl but model 'tiny' is tiny")


def test_a_union_single_file_is_refused_with_what_to_do(tmp_path):
    from sd_blender_server.registry import Registry

    folder = tmp_path / "models" / "ControlNet"
    folder.mkdir(parents=True)
    weights = {
        "controlnet_cond_embedding.conv_in.weight": torch.zeros(4, 3, 3, 3),
        "add_embedding.linear_1.weight": torch.zeros(4, 4),
        "task_embedding": torch.zeros(8, 4),
    }
    save_file(weights, folder / "controlnet-union-sdxl-promax.safetensors")
    registry = Registry().scanned(tmp_path)
    (entry,) = registry.of_kind("refused")
    assert (entry.name, entry.reason) == ("controlnet-union-sdxl-promax", UNION_FILE_REASON)
