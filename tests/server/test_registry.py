"""The model registry: A1111 and ComfyUI model folders built from the tiny model, families read
from safetensors headers, single-file checkpoints in the original (LDM) layout loaded offline,
pickle files refused and never opened, one base model loaded at a time."""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import torch
from live_server import running_server, server_command
from safetensors.torch import load_file, save_file
from sd_blender_server.registry import PICKLE_REASON, Registry, classify_safetensors, read_safetensors_header
from sd_blender_server.tiny import controlnet_dir, ensure_tiny_model
from model_builders import (
    SD15_LORA,
    TINY_METADATA,
    fake_safetensors,
    save_ldm_single_file,
    tiny_lora,
    toy_sdxl_folders,
)
from server_helpers import field_error, fetch_image, png_base64, run_job, submit, wait_finished

SDXL_CHECKPOINT = {
    "model.diffusion_model.input_blocks.0.0.weight": (4, 4),
    "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (4,),
    "conditioner.embedders.1.model.ln_final.weight": (4,),
}
SD15_CHECKPOINT = {
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": (4,),
}
SDXL_CONTROLNET = {"controlnet_cond_embedding.conv_in.weight": (4, 3, 3, 3), "add_embedding.linear_1.weight": (4, 4)}
SD15_LDM_CONTROLNET = {
    "control_model.input_hint_block.0.weight": (4, 3, 3, 3),
    "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
}
SDXL_LORA = {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)}


@pytest.mark.parametrize(
    ("shapes", "metadata", "expected"),
    [
        (SDXL_CHECKPOINT, None, ("base", "sdxl")),
        (SD15_CHECKPOINT, None, ("base", "sd15")),
        (SD15_CHECKPOINT, {"modelspec.architecture": "stable-diffusion-xl-v1-base"}, ("base", "sdxl")),
        ({"model.diffusion_model.x": (1,), "cond_stage_model.model.ln_final.weight": (4,)}, None, ("base", "sd2")),
        (SDXL_CONTROLNET, None, ("controlnet", "sdxl")),
        (SD15_LDM_CONTROLNET, None, ("controlnet", "sd15")),
        (SD15_LORA, None, ("lora", "sd15")),
        (SDXL_LORA, None, ("lora", "sdxl")),
        ({"something.else": (2,)}, None, (None, None)),
    ],
)
def test_kind_and_family_come_from_the_header(tmp_path, shapes, metadata, expected):
    header = read_safetensors_header(fake_safetensors(tmp_path / "model.safetensors", shapes, metadata))
    assert classify_safetensors(header) == expected


@pytest.fixture(scope="module")
def layouts(tiny_cache, tmp_path_factory) -> dict:
    """An A1111 webui root and a ComfyUI models/ folder, filled from the tiny model."""
    tiny = ensure_tiny_model(tiny_cache)
    root = tmp_path_factory.mktemp("layouts")

    webui = root / "stable-diffusion-webui"
    checkpoints = webui / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    save_ldm_single_file(tiny / "pipeline", checkpoints / "tiny-ldm.safetensors", TINY_METADATA)
    (checkpoints / "more").mkdir()
    shutil.copy(checkpoints / "tiny-ldm.safetensors", checkpoints / "more" / "tiny-ldm.safetensors")
    shutil.copytree(tiny / "pipeline", checkpoints / "tiny-diffusers")
    # A pickle checkpoint as a named pipe: opening it would block the server forever.
    os.mkfifo(checkpoints / "old-model.ckpt")
    controlnets = webui / "models" / "ControlNet"
    depth = load_file(controlnet_dir(tiny, "depth") / "diffusion_pytorch_model.safetensors")
    fake_safetensors(controlnets / "unused.txt", {"a": (1,)})
    save_file(depth, str(controlnets / "control_tiny_depth.safetensors"), metadata=TINY_METADATA)
    fake_safetensors(controlnets / "controlnet_xl_canny.safetensors", SDXL_CONTROLNET)
    (controlnets / "legacy_openpose.pth").write_bytes(b"not really a pickle")
    fake_safetensors(webui / "models" / "Lora" / "detail_sd15.safetensors", SD15_LORA)
    fake_safetensors(webui / "models" / "Lora" / "style_xl.safetensors", SDXL_LORA)

    comfy_models = root / "ComfyUI" / "models"
    fake_safetensors(comfy_models / "checkpoints" / "big_xl.safetensors", SDXL_CHECKPOINT)
    (comfy_models / "checkpoints" / "weights.bin").write_bytes(b"\x80\x04not opened")
    shutil.copytree(controlnet_dir(tiny, "normal"), comfy_models / "controlnet" / "tiny_normal")
    (comfy_models / "loras").mkdir()
    return {"webui": webui, "comfy_models": comfy_models}


def test_registry_finds_both_layouts_and_refuses_pickles(layouts):
    registry = Registry().scanned(layouts["webui"]).scanned(layouts["comfy_models"])
    by_name = {(entry.kind, entry.name): entry for entry in registry.entries}

    # Found in sorted order, so more/tiny-ldm.safetensors comes first and keeps the plain stem.
    assert by_name["base", "tiny-ldm"].location.endswith("more/tiny-ldm.safetensors")
    assert sorted(registry.names("base")) == ["big_xl", "tiny-diffusers", "tiny-ldm", "tiny-ldm-2"]
    assert by_name["base", "tiny-ldm"].family == "tiny" and by_name["base", "tiny-ldm"].source == "file"
    assert by_name["base", "tiny-diffusers"].source == "folder"
    assert by_name["base", "big_xl"].family == "sdxl"
    assert sorted(registry.names("controlnet")) == ["control_tiny_depth", "controlnet_xl_canny", "tiny_normal"]
    assert by_name["controlnet", "control_tiny_depth"].control_type == "depth"
    assert by_name["controlnet", "tiny_normal"].control_type == "normal"
    assert by_name["controlnet", "controlnet_xl_canny"].family == "sdxl"
    assert sorted(registry.names("lora")) == ["detail_sd15", "style_xl"]
    assert sorted(registry.names("refused")) == ["legacy_openpose", "old-model", "weights"]
    assert all(entry.reason == PICKLE_REASON for entry in registry.of_kind("refused"))
    assert "convert to safetensors" in PICKLE_REASON


def test_the_ldm_single_file_loads_back_as_the_same_model(tiny_cache, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipeline_dir = ensure_tiny_model(tiny_cache) / "pipeline"
    save_ldm_single_file(pipeline_dir, tmp_path / "tiny.safetensors")
    reference = StableDiffusionPipeline.from_pretrained(pipeline_dir, safety_checker=None)
    single = StableDiffusionPipeline.from_single_file(
        str(tmp_path / "tiny.safetensors"), config=str(pipeline_dir), local_files_only=True, safety_checker=None
    )
    for component in ("unet", "vae", "text_encoder"):
        expected, loaded = getattr(reference, component).state_dict(), getattr(single, component).state_dict()
        assert expected.keys() == loaded.keys()
        assert all(torch.equal(expected[key], loaded[key]) for key in expected), component


@pytest.fixture(scope="module")
def models_server(layouts, tiny_cache):
    args = ("--models-dir", str(layouts["webui"]), "--models-dir", str(layouts["comfy_models"]))
    with running_server(*args, cache_dir=tiny_cache, env={"HF_HUB_OFFLINE": "1"}) as live:
        yield live


@pytest.fixture
def models_client(models_server):
    with httpx.Client(base_url=models_server.url, timeout=60) as http:
        yield http


def test_models_lists_every_model_with_family_source_and_refused_files(models_client):
    models = models_client.get("/v1/models").json()
    bases = {item["name"]: item for item in models["base_models"]}
    assert list(bases)[0] == "tiny" and bases["tiny"]["default"] is True
    assert sorted(bases) == ["big_xl", "tiny", "tiny-diffusers", "tiny-ldm", "tiny-ldm-2"]
    assert (bases["tiny"]["family"], bases["tiny"]["source"], bases["tiny"]["kind"]) == ("tiny", "tiny", "base")
    assert (bases["tiny-ldm"]["family"], bases["tiny-ldm"]["source"]) == ("tiny", "file")
    assert (bases["big_xl"]["family"], bases["big_xl"]["source"]) == ("sdxl", "file")
    assert bases["tiny-diffusers"]["source"] == "folder"
    assert sum(item["loaded"] for item in bases.values()) <= 1

    controlnets = {item["name"]: item for item in models["controlnets"]}
    assert {"tiny", "control_tiny_depth", "controlnet_xl_canny", "tiny_normal"} <= set(controlnets)
    assert (controlnets["control_tiny_depth"]["type"], controlnets["control_tiny_depth"]["source"]) == ("depth", "file")
    assert controlnets["controlnet_xl_canny"]["family"] == "sdxl"
    assert all(item["kind"] == "controlnet" for item in models["controlnets"])

    loras = {item["name"]: item for item in models["loras"]}
    assert (loras["detail_sd15"]["family"], loras["style_xl"]["family"]) == ("sd15", "sdxl")
    assert all(item["kind"] == "lora" and item["source"] == "file" for item in loras.values())

    refused = {item["name"]: item for item in models["refused"]}
    assert sorted(refused) == ["legacy_openpose", "old-model", "weights"]
    assert refused["old-model"]["reason"].endswith("convert to safetensors")
    assert (refused["old-model"]["kind"], refused["legacy_openpose"]["kind"]) == ("base", "controlnet")
    assert "unipc" in models["schedulers"]


def test_a_job_picks_its_base_model_and_one_is_loaded_at_a_time(models_client, layouts):
    body = {"prompt": "a cube", "width": 64, "height": 64, "steps": 3, "seed": 7}
    default = run_job(models_client, **body)
    loads = models_client.get("/health").json()["load_counts"]["base_model"]

    single_file = run_job(models_client, model="tiny-ldm", **body)
    assert single_file["parameters"]["model"] == "tiny-ldm"
    # A1111's model hash: the first 10 hex digits of the checkpoint's SHA-256.
    checkpoint = layouts["webui"] / "models" / "Stable-diffusion" / "tiny-ldm.safetensors"
    model_hash = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert single_file["parameters"]["model_hash"] == model_hash
    text = fetch_image(models_client, single_file["images"][0]).text["parameters"]
    assert f"Size: 64x64, Model hash: {model_hash}, Model: tiny-ldm" in text
    assert "model_hash" not in default["parameters"]  # A1111 hashes single files only
    health = models_client.get("/health").json()
    assert health["model"] == "tiny-ldm" and health["load_counts"]["base_model"] == loads + 1
    loaded = [item["name"] for item in models_client.get("/v1/models").json()["base_models"] if item["loaded"]]
    assert loaded == ["tiny-ldm"]
    # The same weights through the LDM single file as through the diffusers folder: the same pixels.
    pixels = [fetch_image(models_client, status["images"][0]).tobytes() for status in (default, single_file)]
    assert pixels[0] == pixels[1]
    again = run_job(models_client, model="tiny-ldm", **body)  # already loaded: no reload
    assert models_client.get("/health").json()["load_counts"]["base_model"] == loads + 1
    assert fetch_image(models_client, again["images"][0]).tobytes() == pixels[0]

    folder = run_job(models_client, model="tiny-diffusers", **body)
    assert fetch_image(models_client, folder["images"][0]).tobytes() == pixels[0]
    run_job(models_client, **body)  # back to the default model
    loaded = [item["name"] for item in models_client.get("/v1/models").json()["base_models"] if item["loaded"]]
    assert loaded == ["tiny"]


def test_controlnets_from_model_folders_run_by_name(models_client):
    control = {"type": "depth", "model": "control_tiny_depth", "image": png_base64(64, 64)}
    status = run_job(models_client, width=64, height=64, steps=2, controls=[control])
    assert status["parameters"]["controls"][0]["model"] == "control_tiny_depth"
    normal = {"type": "normal", "model": "tiny_normal", "image": png_base64(64, 64, (128, 128, 255))}
    status = run_job(models_client, width=64, height=64, steps=2, controls=[control, normal])
    assert [item["model"] for item in status["parameters"]["controls"]] == ["control_tiny_depth", "tiny_normal"]
    listed = {item["name"]: item["loaded"] for item in models_client.get("/v1/models").json()["controlnets"]}
    assert listed["control_tiny_depth"] and listed["tiny_normal"]


def test_unknown_or_refused_model_is_a_422_listing_the_names(models_client):
    message = field_error(models_client.post("/v1/jobs", json={"model": "nope"}), "model")
    assert message == "model: no base model named 'nope'; this server has tiny, tiny-ldm, tiny-diffusers, tiny-ldm-2, big_xl"
    # A refused pickle is no base model, and a path is no name.
    field_error(models_client.post("/v1/jobs", json={"model": "old-model"}), "model")
    for path in ("/etc/passwd", "../tiny", str(Path.cwd())):
        field_error(models_client.post("/v1/jobs", json={"model": path}), "model")


def test_unknown_lora_is_a_422_naming_its_index(models_client):
    loras = [{"name": "detail_sd15", "weight": 0.5}, {"name": "missing", "weight": 1.0}]
    response = models_client.post("/v1/jobs", json={"loras": loras})
    message = field_error(response, "loras[1].name")
    assert "no LoRA named 'missing'" in message and "detail_sd15" in message


def test_family_mismatch_is_refused_before_it_runs(models_client):
    control = {"type": "canny", "model": "controlnet_xl_canny", "image": png_base64(64, 64)}
    message = field_error(models_client.post("/v1/jobs", json={"controls": [control]}), "controls[0].model")
    assert message == "controls[0].model: ControlNet 'controlnet_xl_canny' is for sdxl but model 'tiny' is tiny"
    depth = {"type": "depth", "image": png_base64(64, 64)}
    message = field_error(models_client.post("/v1/jobs", json={"model": "big_xl", "controls": [depth]}), "controls[0].type")
    assert "is for tiny but model 'big_xl' is sdxl" in message
    message = field_error(models_client.post("/v1/jobs", json={"loras": [{"name": "style_xl"}]}), "loras[0].name")
    assert "LoRA 'style_xl' is for sdxl but model 'tiny' is tiny" in message


def test_a_model_that_cannot_load_fails_its_job_and_the_server_goes_on(models_client):
    status = wait_finished(models_client, submit(models_client, model="big_xl", width=64, height=64, steps=2))
    assert status["state"] == "failed"
    assert status["error"].startswith("cannot load model 'big_xl'"), status["error"]
    run_job(models_client, width=64, height=64, steps=2)


def test_missing_models_dir_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [*server_command(), "--model", "tiny", "--models-dir", str(tmp_path / "nowhere"), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"sd-blender-server: models folder {tmp_path / 'nowhere'} does not exist"


def test_carried_configs_and_tokenizers_describe_sd15_and_sdxl():
    from sd_blender_server.model_sources import carried_tokenizers
    from sd_blender_server.registry import CONFIGS_DIR, folder_kind_family

    assert folder_kind_family(CONFIGS_DIR / "sd15") == ("base", "sd15")
    assert folder_kind_family(CONFIGS_DIR / "sdxl") == ("base", "sdxl")
    assert folder_kind_family(CONFIGS_DIR / "sd15" / "controlnet") == ("controlnet", "sd15")
    assert folder_kind_family(CONFIGS_DIR / "sdxl" / "controlnet") == ("controlnet", "sdxl")
    tokenizer = carried_tokenizers("sd15")["tokenizer"]
    # CLIP ViT-L/14's ids for this prompt, as the hub's openai/clip-vit-large-patch14 tokenizer gives them.
    ids = tokenizer("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    xl = carried_tokenizers("sdxl")
    assert xl["tokenizer_2"].pad_token == "!" and xl["tokenizer"].pad_token == "<|endoftext|>"
    assert carried_tokenizers("tiny") == {}


def test_a_pickle_model_on_the_command_line_is_never_opened(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    os.mkfifo(checkpoint)  # opening it would block: the server must not try
    result = subprocess.run(
        [*server_command(), "--model", str(checkpoint), "--port", "1"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"sd-blender-server: model '{checkpoint}' is not loaded: pickle file (may run code when loaded): "
        "convert to safetensors"
    )


def _a1111_lora_hash(path: Path) -> str:
    """As AUTOMATIC1111 computes it (addnet_hash_safetensors): SHA-256 of what follows the header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]


def test_loras_apply_per_job_with_their_weights_and_are_unloaded_after(tiny_cache, tmp_path):
    pipeline_dir = ensure_tiny_model(tiny_cache) / "pipeline"
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    loras.mkdir(parents=True)
    tiny_lora(pipeline_dir, loras / "tiny_style.safetensors", seed=1)
    tiny_lora(pipeline_dir, loras / "tiny_detail.safetensors", seed=2)
    body = {"prompt": "a cube", "width": 64, "height": 64, "steps": 3, "seed": 11}
    with running_server("--models-dir", str(tmp_path / "ComfyUI"), cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            listed = {item["name"]: item for item in client.get("/v1/models").json()["loras"]}
            assert sorted(listed) == ["tiny_detail", "tiny_style"]
            assert listed["tiny_style"]["family"] == "tiny"

            def pixels(**extra):
                status = run_job(client, **body, **extra)
                return status, fetch_image(client, status["images"][0]).tobytes()

            _, plain = pixels()
            styled_status, styled = pixels(loras=[{"name": "tiny_style", "weight": 1.0}])
            assert styled_status["parameters"]["loras"] == [{"name": "tiny_style", "weight": 1.0}]
            both_status, both = pixels(loras=[{"name": "tiny_style", "weight": 1.0}, {"name": "tiny_detail", "weight": 0.7}])
            text = fetch_image(client, both_status["images"][0]).text["parameters"]
            hashes = {name: _a1111_lora_hash(loras / f"{name}.safetensors") for name in ("tiny_style", "tiny_detail")}
            assert text.startswith("a cube <lora:tiny_style:1.0> <lora:tiny_detail:0.7>\nSteps: 3,"), text
            assert f'Lora hashes: "tiny_style: {hashes["tiny_style"]}, tiny_detail: {hashes["tiny_detail"]}"' in text
            assert styled != plain
            _, half = pixels(loras=[{"name": "tiny_style", "weight": 0.5}])
            assert half not in (plain, styled)
            assert both not in (plain, styled, half)
            _, zero = pixels(loras=[{"name": "tiny_style", "weight": 0.0}])
            assert zero == plain
            _, after = pixels()  # the LoRAs were unloaded after their jobs
            assert after == plain
            _, again = pixels(loras=[{"name": "tiny_style", "weight": 1.0}])
            assert again == styled


def test_without_peft_a_job_with_loras_fails_saying_so(tiny_cache, tmp_path):
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    tiny_lora(ensure_tiny_model(tiny_cache) / "pipeline", loras / "tiny_style.safetensors", seed=1)
    hide_peft = tmp_path / "hide_peft"
    hide_peft.mkdir()
    (hide_peft / "sitecustomize.py").write_text('import sys\nsys.modules["peft"] = None  # import peft fails\n')
    with running_server("--models-dir", str(tmp_path / "models"), cache_dir=tiny_cache, env={"PYTHONPATH": str(hide_peft)}) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            job = submit(client, width=64, height=64, steps=1, loras=[{"name": "tiny_style"}])  # accepted
            status = wait_finished(client, job)
            assert status["state"] == "failed"
            assert status["error"].startswith("cannot apply LoRA 'tiny_style': PEFT backend is required"), status["error"]
            run_job(client, width=64, height=64, steps=1)  # and the server goes on


def test_sdxl_models_run_with_sdxl_controlnets(tiny_cache, tmp_path):
    toy_sdxl_folders(ensure_tiny_model(tiny_cache), tmp_path / "models")
    with running_server("--models-dir", str(tmp_path), cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            models = client.get("/v1/models").json()
            bases = {item["name"]: item["family"] for item in models["base_models"]}
            assert bases == {"tiny": "tiny", "toy-xl": "sdxl"}
            controlnet = next(item for item in models["controlnets"] if item["name"] == "toy_xl_depth")
            assert (controlnet["family"], controlnet["type"], controlnet["source"]) == ("sdxl", "depth", "folder")

            body = {"model": "toy-xl", "width": 64, "height": 64, "steps": 2, "seed": 5}
            status = run_job(client, **body)
            assert fetch_image(client, status["images"][0]).size == (64, 64)
            depth = {"type": "depth", "model": "toy_xl_depth", "image": png_base64(64, 64)}
            run_job(client, **body, controls=[depth])
            run_job(client, **body, controls=[depth], init_image=png_base64(64, 64, (200, 10, 10)), strength=0.5)
            # The tiny (SD 1.5-shaped) ControlNets are refused with an SDXL model, and the other way round.
            message = field_error(client.post("/v1/jobs", json={**body, "controls": [{**depth, "model": None}]}), "controls[0].type")
            assert message.endswith("is for tiny but model 'toy-xl' is sdxl")
            field_error(client.post("/v1/jobs", json={"controls": [depth]}), "controls[0].model")


def test_a_diffusers_folder_with_only_pickle_weights_is_refused(tiny_cache, tmp_path):
    from sd_blender_server.config import ServerConfig
    from sd_blender_server.engine import GenerationEngine
    from sd_blender_server.errors import ModelLoadError

    folder = tmp_path / "models" / "checkpoints" / "pickled"
    shutil.copytree(ensure_tiny_model(tiny_cache) / "pipeline", folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), weights.with_suffix(".bin"))
    weights.unlink()
    config = ServerConfig(model="tiny", controlnets={}, device="cpu", cache_dir=str(tiny_cache), models_dirs=(str(tmp_path),))
    engine = GenerationEngine(config)
    assert engine.catalog.registry.names("base") == ["tiny", "pickled"]
    with pytest.raises(ModelLoadError, match=r"^cannot load model 'pickled' from .*no file named diffusion_pytorch_model\.safetensors"):
        engine.load("pickled")
    assert engine.loaded.base_model is None
