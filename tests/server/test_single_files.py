"""Single files as A1111/ComfyUI users keep them, loaded offline through a real server:

- an SDXL checkpoint in the original SGM layout (model.diffusion_model.*, conditioner.embedders.0/1.*,
  first_stage_model.*), float16, built from a toy SDXL shaped like the carried SDXL configuration;
  the server runs with a copy of its carried configs/ whose sdxl/ is the toy's configuration, so
  the code that loads real SDXL files (family from the header, config folder, carried tokenizers,
  from_single_file offline) is the code tested;
- ControlNets in lllyasviel's original layout (control_model.*, and the same without the prefix);
- kohya-ss LoRAs (lora_unet_*, lora_te_* / lora_te1_* / lora_te2_*, LoCon convolutions, alphas).

Each is compared with the diffusers-folder version of the same weights: the same pixels.
"""
import base64
import io
import json

import httpx
import numpy as np
import pytest
import torch
from live_server import running_server
from PIL import Image
from model_builders import (
    TINY_METADATA,
    configs_with,
    controlnet_to_ldm,
    kohya_lora,
    merge_kohya,
    save_state,
    sdxl_to_ldm,
    server_with_configs,
    toy_sdxl_pipeline,
)
from safetensors.torch import load_file
from sd_blender_server.registry import (
    CONFIGS_DIR,
    Registry,
    classify_safetensors,
    read_safetensors_header,
    unsupported_reason,
)
from sd_blender_server.tiny import controlnet_dir, ensure_tiny_model
from server_helpers import fetch_image, run_job

JOB = {"prompt": "a red cube on a table", "width": 64, "height": 64, "steps": 3, "seed": 21}
# What kohya-ss sd-scripts writes into a LoRA's metadata (a few of its ss_* keys).
KOHYA_METADATA = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0"}


@pytest.fixture(scope="module")
def models(tiny_cache, tmp_path_factory):
    """An A1111 webui root and a ComfyUI models folder holding every format, plus a copy of the
    carried configs whose sdxl/ describes the toy SDXL."""
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("single_files")
    tiny = ensure_tiny_model(tiny_cache)
    webui = root / "stable-diffusion-webui" / "models"
    comfy = root / "ComfyUI" / "models"

    xl_folder = comfy / "checkpoints" / "toy_xl_diffusers"
    xl = toy_sdxl_pipeline()
    xl.save_pretrained(xl_folder, safe_serialization=True)
    save_state(sdxl_to_ldm(xl_folder), webui / "Stable-diffusion" / "toy_xl.safetensors")
    configs = configs_with("sdxl", xl_folder, root / "configs")

    layouts = (("depth", "control_v11f1p_tiny_depth", "control_model."), ("normal", "tiny_normal_bare", ""))
    for control_type, name, prefix in layouts:
        folder = controlnet_dir(tiny, control_type)
        config = json.loads((folder / "config.json").read_text())
        state = controlnet_to_ldm(load_file(folder / "diffusion_pytorch_model.safetensors"), config, prefix)
        save_state(state, webui / "ControlNet" / f"{name}.safetensors", TINY_METADATA)

    sd = StableDiffusionPipeline.from_pretrained(tiny / "pipeline", safety_checker=None)
    tiny_lora = kohya_lora(sd.unet, {"te": sd.text_encoder}, seed=3)
    save_state(tiny_lora, webui / "Lora" / "tiny_kohya.safetensors", {**KOHYA_METADATA, **TINY_METADATA})
    xl_lora = kohya_lora(
        xl.unet, {"te1": xl.text_encoder, "te2": xl.text_encoder_2}, seed=4, sgm=True,
        conv_blocks=("down_blocks.0.resnets.0.conv1", "up_blocks.0.resnets.1.conv2"),
    )
    # No family metadata: an SDXL LoRA is known by its second text encoder (lora_te2_*).
    save_state(xl_lora, comfy / "loras" / "toy_xl_kohya.safetensors", KOHYA_METADATA)
    return {"root": root, "webui": webui.parent, "comfy": comfy, "configs": configs, "tiny": tiny, "tiny_lora": tiny_lora}


@pytest.fixture(scope="module")
def client(models, tiny_cache):
    """A real server (the toy SDXL's configuration in place of the carried SDXL one), offline,
    with an empty Hugging Face cache."""
    command = server_with_configs(models["configs"], models["root"])
    args = ("--models-dir", str(models["webui"]), "--models-dir", str(models["comfy"]))
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(models["root"] / "hf-home")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SD_BLENDER_SERVER", str(command))
        with running_server(*args, cache_dir=tiny_cache, env=env) as live:
            with httpx.Client(base_url=live.url, timeout=120) as http:
                yield http


def _gradient(size: int = 64) -> str:
    ramp = np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([ramp, ramp.T, ramp[::-1]], axis=-1)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _pixels(client, **body) -> bytes:
    status = run_job(client, **{**JOB, **body})
    return fetch_image(client, status["images"][0]).tobytes()


def test_the_toy_sdxl_is_shaped_like_the_carried_sdxl_configuration(models):
    """The toy differs from SDXL 1.0 base only in sizes: the same pipeline, component classes and settings."""
    toy, carried = models["configs"] / "sdxl", CONFIGS_DIR / "sdxl"
    versions = {"_diffusers_version", "_name_or_path", "transformers_version", "dtype", "torch_dtype"}

    def read(path):
        return {key: value for key, value in json.loads(path.read_text()).items() if key not in versions}

    assert read(toy / "model_index.json") == read(carried / "model_index.json")
    sizes = {"block_out_channels", "attention_head_dim", "transformer_layers_per_block", "norm_num_groups", "sample_size",
             "addition_time_embed_dim", "cross_attention_dim", "projection_class_embeddings_input_dim", "hidden_size",
             "intermediate_size", "num_attention_heads", "num_hidden_layers", "projection_dim", "layers_per_block"}
    for component in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler"):
        name = "scheduler_config.json" if component == "scheduler" else "config.json"
        toy_config, carried_config = read(toy / component / name), read(carried / component / name)
        differing = {key for key in carried_config if toy_config.get(key) != carried_config[key]}
        assert differing <= sizes, (component, {key: (toy_config.get(key), carried_config[key]) for key in differing - sizes})


def test_files_are_listed_with_their_kind_and_family(models, client):
    listed = client.get("/v1/models").json()
    bases = {item["name"]: item for item in listed["base_models"]}
    assert (bases["toy_xl"]["family"], bases["toy_xl"]["source"]) == ("sdxl", "file")
    assert (bases["toy_xl_diffusers"]["family"], bases["toy_xl_diffusers"]["source"]) == ("sdxl", "folder")
    controlnets = {item["name"]: item for item in listed["controlnets"]}
    assert {key: controlnets["control_v11f1p_tiny_depth"][key] for key in ("type", "family", "source")} == {
        "type": "depth", "family": "tiny", "source": "file"}
    assert (controlnets["tiny_normal_bare"]["type"], controlnets["tiny_normal_bare"]["family"]) == ("normal", "tiny")
    loras = {item["name"]: item["family"] for item in listed["loras"]}
    assert loras == {"tiny_kohya": "tiny", "toy_xl_kohya": "sdxl"}
    assert listed["refused"] == []


def test_an_sdxl_checkpoint_in_the_original_layout_gives_the_folders_pixels(client):
    # Also the empty prompt: SDXL zeroes the negative embedding then (force_zeros_for_empty_prompt).
    bodies = (JOB, {**JOB, "prompt": "", "guidance_scale": 5.0})
    single = [run_job(client, **{**body, "model": "toy_xl"}) for body in bodies]
    assert client.get("/health").json()["model"] == "toy_xl"
    assert single[0]["parameters"]["model"] == "toy_xl" and len(single[0]["parameters"]["model_hash"]) == 10
    folder = [_pixels(client, **{**body, "model": "toy_xl_diffusers"}) for body in bodies]
    assert [fetch_image(client, status["images"][0]).tobytes() for status in single] == folder
    assert folder[0] != folder[1]


def test_an_sdxl_checkpoint_runs_kohya_sdxl_loras(client):
    lora = [{"name": "toy_xl_kohya", "weight": 1.0}]
    # The same LoRA on the diffusers folder of the same weights gives the same pixels.
    folder = _pixels(client, model="toy_xl_diffusers", loras=lora)
    plain = _pixels(client, model="toy_xl")
    styled = _pixels(client, model="toy_xl", loras=lora)
    assert styled == folder and styled != plain
    assert _pixels(client, model="toy_xl", loras=[{**lora[0], "weight": 0.0}]) == plain
    assert _pixels(client, model="toy_xl") == plain  # unloaded after its job


@pytest.mark.parametrize(("control_type", "name"), [("depth", "control_v11f1p_tiny_depth"), ("normal", "tiny_normal_bare")])
def test_controlnets_in_the_original_layout_give_the_folders_pixels(client, control_type, name):
    image = _gradient()
    # The served tiny ControlNet for the type is the diffusers folder of the same weights.
    served = _pixels(client, controls=[{"type": control_type, "image": image}])
    status = run_job(client, **JOB, controls=[{"type": control_type, "model": name, "image": image}])
    assert status["parameters"]["controls"][0]["model"] == name
    assert fetch_image(client, status["images"][0]).tobytes() == served
    assert served != _pixels(client)  # the ControlNet changes the image
    assert client.get("/health").json()["load_counts"]["controlnets"][f"models-dir:{name}"] == 1


def test_kohya_loras_apply_with_their_weights(client):
    plain = _pixels(client)
    styled = _pixels(client, loras=[{"name": "tiny_kohya", "weight": 1.0}])
    assert styled != plain
    half = _pixels(client, loras=[{"name": "tiny_kohya", "weight": 0.5}])
    assert half not in (plain, styled)
    assert _pixels(client, loras=[{"name": "tiny_kohya", "weight": 0.0}]) == plain
    assert _pixels(client) == plain


def test_a_kohya_lora_changes_the_weights_by_alpha_over_rank_times_up_down(models):
    """What diffusers makes of a kohya file (the server's load_lora_weights + set_adapters) equals
    the LoRA merged by hand: every module found, alphas applied, LoCon convolutions included."""
    from diffusers import StableDiffusionPipeline

    pipeline_dir = models["tiny"] / "pipeline"
    lora = models["tiny_lora"]
    assert any(key.endswith("conv1.lora_down.weight") for key in lora) and any(key.startswith("lora_te_") for key in lora)
    loaded = StableDiffusionPipeline.from_pretrained(pipeline_dir, safety_checker=None)
    loaded.load_lora_weights(str(models["webui"] / "models" / "Lora" / "tiny_kohya.safetensors"), adapter_name="lora0")
    loaded.set_adapters(["lora0"], adapter_weights=[0.7])
    merged = StableDiffusionPipeline.from_pretrained(pipeline_dir, safety_checker=None)
    merge_kohya(merged.unet, {"te": merged.text_encoder}, lora, weight=0.7)
    plain = StableDiffusionPipeline.from_pretrained(pipeline_dir, safety_checker=None)

    ids = loaded.tokenizer("a red cube", padding="max_length", return_tensors="pt").input_ids
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    outputs = []
    with torch.no_grad():
        for pipeline in (loaded, merged, plain):
            text = pipeline.text_encoder(ids)[0]
            outputs.append((text, pipeline.unet(latents, torch.tensor([500]), text).sample))
    (text, unet), (text_merged, unet_merged), (text_plain, unet_plain) = outputs
    torch.testing.assert_close(text, text_merged, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unet, unet_merged, rtol=1e-4, atol=1e-4)
    assert (text - text_plain).abs().max() > 0.1 and (unet - unet_plain).abs().max() > 0.01


def test_headers_of_every_format_are_classified_without_loading(models):
    webui, comfy = models["webui"] / "models", models["comfy"]
    expected = {
        webui / "Stable-diffusion" / "toy_xl.safetensors": ("base", "sdxl"),
        webui / "ControlNet" / "control_v11f1p_tiny_depth.safetensors": ("controlnet", "tiny"),
        webui / "ControlNet" / "tiny_normal_bare.safetensors": ("controlnet", "tiny"),
        webui / "Lora" / "tiny_kohya.safetensors": ("lora", "tiny"),
        comfy / "loras" / "toy_xl_kohya.safetensors": ("lora", "sdxl"),
    }
    for path, kind_family in expected.items():
        assert classify_safetensors(read_safetensors_header(path)) == kind_family, path
        assert unsupported_reason(read_safetensors_header(path)) is None, path


ATTN2 = "transformer_blocks_0_attn2_to_k"


@pytest.mark.parametrize(
    ("shapes", "metadata", "expected"),
    [
        # lllyasviel's layout without the control_model. prefix (as some fp16 conversions save it).
        ({"input_hint_block.0.weight": (16, 3, 3, 3), "zero_convs.0.0.weight": (320, 320, 1, 1),
          "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}, None, ("controlnet", "sd15")),
        ({"control_model.input_hint_block.0.weight": (16, 3, 3, 3), "control_model.label_emb.0.0.weight": (1280, 2816)},
         None, ("controlnet", "sdxl")),
        # kohya-ss LoRAs: the family from ss_base_model_version when the tensors do not tell it.
        ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768)}, {"ss_base_model_version": "sd_v1"},
         ("lora", "sd15")),
        ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768)},
         {"ss_base_model_version": "sdxl_base_v1-0"}, ("lora", "sdxl")),
        ({f"lora_unet_input_blocks_4_1_{ATTN2}.lora_down.weight": (4, 2048)}, None, ("lora", "sdxl")),
        ({f"lora_unet_down_blocks_0_attentions_0_{ATTN2}.lora_down.weight": (4, 1024)}, {"ss_v2": "True"}, ("lora", "sd2")),
    ],
)
def test_more_layouts_are_recognised_from_the_header(tmp_path, shapes, metadata, expected):
    path = save_state({key: torch.zeros(shape) for key, shape in shapes.items()}, tmp_path / "model.safetensors", metadata)
    assert classify_safetensors(read_safetensors_header(path)) == expected


# Formats that would fail when loaded (or run wrongly): refused with a reason, never offered.
LYCORIS = f"lora_unet_down_blocks_0_attentions_0_{ATTN2}"
UNSUPPORTED = {
    ("Lora", "style_loha"): (
        {f"{LYCORIS}.hada_w1_a": (320, 4), f"{LYCORIS}.hada_w1_b": (4, 768), f"{LYCORIS}.alpha": ()},
        "a LyCORIS LoHa/LoKr network: not supported (LoRA and LoCon files are)",
    ),
    ("Lora", "style_lokr"): (
        {f"{LYCORIS}.lokr_w1": (4, 4), f"{LYCORIS}.lokr_w2": (80, 192)},
        "a LyCORIS LoHa/LoKr network: not supported (LoRA and LoCon files are)",
    ),
    ("ControlNet", "control-lora-canny-rank128"): (
        {"lora_controlnet": (1,), "input_hint_block.0.weight": (16, 3, 3, 3), "input_blocks.4.1.proj_in.up": (640, 128)},
        "a Control-LoRA: not supported (ControlNets in the original or diffusers layout are)",
    ),
    ("ControlNet", "kohya_controllllite_xl_canny"): (
        {"lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.down.0.weight": (32, 640)},
        "a ControlNet-LLLite: not supported (ControlNets in the original or diffusers layout are)",
    ),
    ("ControlNet", "control_sdxl_depth_ldm"): (
        {"control_model.input_hint_block.0.weight": (16, 3, 3, 3), "control_model.label_emb.0.0.weight": (1280, 2816)},
        "an SDXL ControlNet in the original layout: not supported (SDXL ControlNets in the diffusers layout are)",
    ),
    ("Stable-diffusion", "instruct-pix2pix-00-22000"): (
        {"model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3),
         "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)},
        "a UNet with 8 input channels (an instruct-pix2pix model): not supported "
        "(this server runs 4-channel models and 9-channel inpainting models)",
    ),
    ("Stable-diffusion", "sd_xl_refiner_1.0"): (
        {"model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3),
         "conditioner.embedders.0.model.ln_final.weight": (1280,)},
        "an SDXL refiner: not supported (SDXL base models are)",
    ),
}


def test_formats_that_cannot_run_are_refused_with_their_reason(tmp_path, tiny_cache):
    from sd_blender_server.config import ServerConfig
    from sd_blender_server.engine import GenerationEngine
    from sd_blender_server.errors import ModelLoadError

    models = tmp_path / "webui" / "models"
    for (folder, name), (shapes, _) in UNSUPPORTED.items():
        save_state({key: torch.zeros(shape) for key, shape in shapes.items()}, models / folder / f"{name}.safetensors")
    registry = Registry().scanned(tmp_path / "webui")
    assert registry.names("base") == registry.names("controlnet") == registry.names("lora") == []
    refused = {entry.name: entry for entry in registry.of_kind("refused")}
    kinds = {"Lora": "lora", "ControlNet": "controlnet", "Stable-diffusion": "base"}
    for (folder, name), (_, reason) in UNSUPPORTED.items():
        assert (refused[name].reason, refused[name].refused_kind) == (reason, kinds[folder])
    # Named on the command line, the same file stops the server with the same reason.
    pix2pix = models / "Stable-diffusion" / "instruct-pix2pix-00-22000.safetensors"
    engine = GenerationEngine(ServerConfig(model=str(pix2pix), controlnets={}, device="cpu", cache_dir=str(tiny_cache)))
    with pytest.raises(ModelLoadError) as error:
        engine.load()
    reason = UNSUPPORTED["Stable-diffusion", "instruct-pix2pix-00-22000"][1]
    assert str(error.value) == f"model '{pix2pix}' is not loaded: {reason}"


def _meta(model_class, config):
    from accelerate import init_empty_weights

    with init_empty_weights():
        return model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)


def _assert_same_tensors(converted: dict, model, extra=()) -> None:
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    got = {key: tuple(value.shape) for key, value in converted.items() if key not in extra}
    assert got.keys() == expected.keys(), (sorted(set(got) - set(expected))[:5], sorted(set(expected) - set(got))[:5])
    assert got == expected


def test_full_size_checkpoints_in_the_original_layout_fit_the_carried_configs():
    """SD 1.5, SDXL 1.0 base and an SD 1.5 ControlNet at full size as meta tensors (no memory, no
    weights): written in the original layout, then read by the converters from_single_file uses,
    with the configurations the server carries: every weight is found, with its shape. The toys
    above run the same conversions on real numbers; this checks the carried configs at full size."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_controlnet_checkpoint,
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from model_builders import ldm_checkpoint, sgm_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(*parts):
        return json.loads(CONFIGS_DIR.joinpath(*parts).read_text())

    def flat(state):  # transformers >= 5.6: CLIPTextModel has no text_model. level
        return {key.removeprefix("text_model."): value for key, value in state.items()}

    checkpoints = {}
    for family in ("sd15", "sdxl"):
        unet_config, vae_config = config(family, "unet", "config.json"), config(family, "vae", "config.json")
        unet, vae = _meta(UNet2DConditionModel, unet_config), _meta(AutoencoderKL, vae_config)
        text = _meta(CLIPTextModel, CLIPTextConfig(**config(family, "text_encoder", "config.json")))
        parts = ((unet.state_dict(), unet_config), (vae.state_dict(), vae_config), text.state_dict())
        if family == "sdxl":
            text_2 = _meta(CLIPTextModelWithProjection, CLIPTextConfig(**config(family, "text_encoder_2", "config.json")))
            checkpoint = sgm_checkpoint(*parts, text_2.state_dict())
            _assert_same_tensors(convert_open_clip_checkpoint(text_2, checkpoint, "conditioner.embedders.1.model."), text_2)
        else:
            checkpoint = ldm_checkpoint(*parts)
        checkpoints[family] = {key: tuple(value.shape) for key, value in checkpoint.items()}
        _assert_same_tensors(convert_ldm_unet_checkpoint(checkpoint, unet_config), unet)
        _assert_same_tensors(convert_ldm_vae_checkpoint(checkpoint, vae_config), vae)
        _assert_same_tensors(flat(convert_ldm_clip_checkpoint(checkpoint)), text, extra={"embeddings.position_ids"})

    controlnet_config = config("sd15", "controlnet", "config.json")
    controlnet = _meta(ControlNetModel, controlnet_config)
    checkpoint = controlnet_to_ldm(controlnet.state_dict(), controlnet_config)
    _assert_same_tensors(convert_controlnet_checkpoint(checkpoint, controlnet_config), controlnet)
    checkpoints["controlnet"] = {key: tuple(value.shape) for key, value in checkpoint.items()}

    # Names and shapes as they are in v1-5-pruned-emaonly, sd_xl_base_1.0 and control_v11p_sd15_*.
    assert checkpoints["sd15"]["model.diffusion_model.output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert checkpoints["sd15"]["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert checkpoints["sd15"]["first_stage_model.decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert checkpoints["sd15"]["cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight"] == (768, 3072)
    assert checkpoints["sdxl"]["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert checkpoints["sdxl"]["model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
    assert checkpoints["sdxl"]["model.diffusion_model.output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    assert checkpoints["sdxl"]["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert checkpoints["sdxl"]["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert checkpoints["sdxl"]["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] == (768,)
    assert checkpoints["controlnet"]["control_model.input_hint_block.14.weight"] == (320, 256, 3, 3)
    assert checkpoints["controlnet"]["control_model.zero_convs.11.0.weight"] == (1280, 1280, 1, 1)
    assert checkpoints["controlnet"]["control_model.middle_block_out.0.weight"] == (1280, 1280, 1, 1)
