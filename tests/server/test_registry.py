"""The model registry: A1111 and ComfyUI model folders built from the tiny model, families read
from safetensors headers, single-file checkpoints in the original (LDM) layout loaded offline,
pickle files refused and never opened, one base model loaded at a time."""
import hashlib
import json
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
from server_helpers import fetch_image, png_base64, run_job, submit, wait_finished

# How a single file says it is the tiny model (modelspec metadata, as real checkpoints carry it).
TINY_METADATA = {"modelspec.architecture": "sd_blender-tiny"}

# --- the tiny model in the original single-file layout (what A1111/ComfyUI users keep) -----------
# diffusers reads this layout (from_single_file) but has no writer; these are the inverse of its
# key conversions for any UNet/VAE depth, checked below by loading the file back.

_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)


def _unet_prefixes(config: dict) -> list[tuple[str, str]]:
    blocks, layers = len(config["block_out_channels"]), config["layers_per_block"]
    up_attention = ["CrossAttn" in name for name in config["up_block_types"]]
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(blocks):
        for j in range(layers):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(layers + 1) * i + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(layers + 1) * i + j + 1}.1."))
        for j in range(layers + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(layers + 1) * i + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(layers + 1) * i + j}.1."))
        if i < blocks - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(layers + 1) * (i + 1)}.0.op."))
            upsampler = f"output_blocks.{(layers + 1) * i + layers}.{2 if up_attention[i] else 1}."
            pairs.append((f"up_blocks.{i}.upsamplers.0.", upsampler))
    return pairs


def _unet_to_ldm(state: dict, config: dict) -> dict:
    pairs = _unet_prefixes(config)
    converted = {}
    for key, value in state.items():
        diffusers_prefix, ldm_prefix = next(pair for pair in pairs if key.startswith(pair[0]))
        rest = key[len(diffusers_prefix):]
        if ".resnets." in diffusers_prefix:
            for old, new in _RESNET:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
        converted["model.diffusion_model." + ldm_prefix + rest] = value
    return converted


def _vae_to_ldm(state: dict, config: dict) -> dict:
    blocks, layers = len(config["block_out_channels"]), config["layers_per_block"]
    pairs = []
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")]
        pairs += [(f"{part}.mid_block.resnets.{j}.", f"{part}.mid.block_{j + 1}.") for j in range(2)]
        pairs += [(f"{part}.conv_norm_out.", f"{part}.norm_out.")]
    for i in range(blocks):
        pairs += [(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.") for j in range(layers)]
        up = blocks - 1 - i
        pairs += [(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{up}.block.{j}.") for j in range(layers + 1)]
        if i < blocks - 1:
            pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
            pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{up}.upsample."))
    converted = {}
    for key, value in state.items():
        for old, new in pairs:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        key = key.replace("conv_shortcut.", "nin_shortcut.")
        if ".attn_1." in key:
            for old, new in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")):
                key = key.replace(".attn_1." + old, ".attn_1." + new)
            if value.ndim == 2:
                value = value[:, :, None, None]
        converted["first_stage_model." + key] = value
    return converted


def save_ldm_single_file(pipeline_dir: Path, target: Path, metadata: dict | None = None) -> None:
    """A diffusers SD pipeline folder as ONE .safetensors file in the original LDM layout."""
    state = {}
    for component, convert in (("unet", _unet_to_ldm), ("vae", _vae_to_ldm)):
        config = json.loads((pipeline_dir / component / "config.json").read_text())
        state.update(convert(load_file(pipeline_dir / component / "diffusion_pytorch_model.safetensors"), config))
    for key, value in load_file(pipeline_dir / "text_encoder" / "model.safetensors").items():
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    save_file({key: value.contiguous() for key, value in state.items()}, str(target), metadata=metadata)


def _fake(path: Path, shapes: dict, metadata: dict | None = None) -> Path:
    """A small safetensors file whose tensor names and shapes look like a real model's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path), metadata=metadata)
    return path


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
SD15_LORA = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4),
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
    header = read_safetensors_header(_fake(tmp_path / "model.safetensors", shapes, metadata))
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
    _fake(controlnets / "unused.txt", {"a": (1,)})
    save_file(depth, str(controlnets / "control_tiny_depth.safetensors"), metadata=TINY_METADATA)
    _fake(controlnets / "controlnet_xl_canny.safetensors", SDXL_CONTROLNET)
    (controlnets / "legacy_openpose.pth").write_bytes(b"not really a pickle")
    _fake(webui / "models" / "Lora" / "detail_sd15.safetensors", SD15_LORA)
    _fake(webui / "models" / "Lora" / "style_xl.safetensors", SDXL_LORA)

    comfy_models = root / "ComfyUI" / "models"
    _fake(comfy_models / "checkpoints" / "big_xl.safetensors", SDXL_CHECKPOINT)
    (comfy_models / "checkpoints" / "weights.bin").write_bytes(b"\x80\x04not opened")
    shutil.copytree(controlnet_dir(tiny, "normal"), comfy_models / "controlnet" / "tiny_normal")
    (comfy_models / "loras").mkdir()
    return {"webui": webui, "comfy_models": comfy_models}


def test_registry_finds_both_layouts_and_refuses_pickles(layouts):
    registry = Registry()
    registry.scan(layouts["webui"])
    registry.scan(layouts["comfy_models"])
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


def _error(response, field):
    assert response.status_code == 422, response.text
    messages = [item["msg"] for item in response.json()["detail"]]
    assert any(message.startswith(f"{field}: ") for message in messages), messages
    return next(message for message in messages if message.startswith(f"{field}: "))


def test_unknown_or_refused_model_is_a_422_listing_the_names(models_client):
    message = _error(models_client.post("/v1/jobs", json={"model": "nope"}), "model")
    assert message == "model: no base model named 'nope'; this server has tiny, tiny-ldm, tiny-diffusers, tiny-ldm-2, big_xl"
    # A refused pickle is no base model, and a path is no name.
    _error(models_client.post("/v1/jobs", json={"model": "old-model"}), "model")
    for path in ("/etc/passwd", "../tiny", str(Path.cwd())):
        _error(models_client.post("/v1/jobs", json={"model": path}), "model")


def test_unknown_lora_is_a_422_naming_its_index(models_client):
    loras = [{"name": "detail_sd15", "weight": 0.5}, {"name": "missing", "weight": 1.0}]
    response = models_client.post("/v1/jobs", json={"loras": loras})
    message = _error(response, "loras[1].name")
    assert "no LoRA named 'missing'" in message and "detail_sd15" in message


def test_family_mismatch_is_refused_before_it_runs(models_client):
    control = {"type": "canny", "model": "controlnet_xl_canny", "image": png_base64(64, 64)}
    message = _error(models_client.post("/v1/jobs", json={"controls": [control]}), "controls[0].model")
    assert message == "controls[0].model: ControlNet 'controlnet_xl_canny' is for sdxl but model 'tiny' is tiny"
    depth = {"type": "depth", "image": png_base64(64, 64)}
    message = _error(models_client.post("/v1/jobs", json={"model": "big_xl", "controls": [depth]}), "controls[0].type")
    assert "is for tiny but model 'big_xl' is sdxl" in message
    message = _error(models_client.post("/v1/jobs", json={"loras": [{"name": "style_xl"}]}), "loras[0].name")
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


def _tiny_lora(pipeline_dir: Path, target: Path, seed: int) -> None:
    """A LoRA for the tiny UNet (peft, random non-zero weights) saved as diffusers saves LoRAs."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    unet = UNet2DConditionModel.from_pretrained(pipeline_dir / "unet")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, parameter in unet.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: a LoRA that changes nothing
            torch.nn.init.normal_(parameter, std=0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    saved = target.parent / "saved"
    StableDiffusionPipeline.save_lora_weights(saved, unet_lora_layers=layers, weight_name=target.name)
    with safe_open(saved / target.name, "pt") as file:
        metadata = {**(file.metadata() or {}), **TINY_METADATA}
    save_file(load_file(saved / target.name), str(target), metadata=metadata)
    shutil.rmtree(saved)


def _a1111_lora_hash(path: Path) -> str:
    """As AUTOMATIC1111 computes it (addnet_hash_safetensors): SHA-256 of what follows the header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]


def test_loras_apply_per_job_with_their_weights_and_are_unloaded_after(tiny_cache, tmp_path):
    pipeline_dir = ensure_tiny_model(tiny_cache) / "pipeline"
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    loras.mkdir(parents=True)
    _tiny_lora(pipeline_dir, loras / "tiny_style.safetensors", seed=1)
    _tiny_lora(pipeline_dir, loras / "tiny_detail.safetensors", seed=2)
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


def _toy_sdxl(tiny_dir: Path, models: Path) -> None:
    """A toy SDXL (two text encoders, text_time embedding) and an SDXL ControlNet, as diffusers folders."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers import AutoencoderKL, ControlNetModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_dir / "pipeline" / "tokenizer")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + the pooled text embedding (32)
        cross_attention_dim=64,  # both text encoders' hidden states side by side
        norm_num_groups=8,
    )
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    pipeline = StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_pretrained(tiny_dir / "pipeline" / "vae"),
        text_encoder=CLIPTextModel(text),
        text_encoder_2=CLIPTextModelWithProjection(text),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
        ),
    )
    pipeline.save_pretrained(models / "checkpoints" / "toy-xl", safe_serialization=True)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    controlnet.save_pretrained(models / "controlnet" / "toy_xl_depth", safe_serialization=True)


def test_sdxl_models_run_with_sdxl_controlnets(tiny_cache, tmp_path):
    _toy_sdxl(ensure_tiny_model(tiny_cache), tmp_path / "models")
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
            message = _error(client.post("/v1/jobs", json={**body, "controls": [{**depth, "model": None}]}), "controls[0].type")
            assert message.endswith("is for tiny but model 'toy-xl' is sdxl")
            _error(client.post("/v1/jobs", json={"controls": [depth]}), "controls[0].model")


def test_a_diffusers_folder_with_only_pickle_weights_is_refused(tiny_cache, tmp_path):
    from sd_blender_server.engine import GenerationEngine
    from sd_blender_server.model_sources import ModelLoadError

    folder = tmp_path / "models" / "checkpoints" / "pickled"
    shutil.copytree(ensure_tiny_model(tiny_cache) / "pipeline", folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), weights.with_suffix(".bin"))
    weights.unlink()
    engine = GenerationEngine("tiny", {}, device="cpu", cache_dir=tiny_cache, models_dirs=[tmp_path])
    assert engine.registry.names("base") == ["tiny", "pickled"]
    with pytest.raises(ModelLoadError, match=r"^cannot load model 'pickled' from .*no file named diffusion_pytorch_model\.safetensors"):
        engine.load("pickled")
    assert not engine.loaded
