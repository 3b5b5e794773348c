"""Small models in the formats A1111/ComfyUI users keep, built for tests from real diffusers and
transformers classes with random weights:

- an SDXL-shaped toy (the server's carried SDXL configuration, shrunk) as a diffusers folder and
  as ONE .safetensors file in the original SGM/LDM layout (`model.diffusion_model.*`,
  `conditioner.embedders.0.transformer.*` for CLIP ViT-L, `conditioner.embedders.1.model.*` for
  OpenCLIP ViT-bigG, `first_stage_model.*`), with a config folder shaped like the carried one;
- a ControlNet in lllyasviel's original layout (`control_model.*`: `input_hint_block`,
  `zero_convs`, `middle_block_out`);
- the tiny model as ONE .safetensors file in the original SD 1.x (LDM) layout, a LoRA for it
  (peft, as diffusers saves LoRAs), and files that only look like a model (names and shapes);
- a toy SDXL (two text encoders, text_time embedding) and an SDXL ControlNet as diffusers folders;
- kohya-ss LoRAs (`lora_unet_*`, `lora_te_*`/`lora_te1_*`/`lora_te2_*`, with `.lora_down.weight`,
  `.lora_up.weight` and `.alpha`), in the diffusers module naming kohya uses for SD 1.x and the
  SGM naming (`input_blocks_4_1_...`) it uses for SDXL;
- inpainting checkpoints: an SD or SDXL folder whose UNet takes 9 input channels.

diffusers reads these layouts (from_single_file, load_lora_weights) but has no writer: the key
conversions here are the inverse of its readers, checked by loading the files back.
"""
from __future__ import annotations

import json
import shlex
import shutil
import stat
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from sd_blender_server.registry import CONFIGS_DIR

# How a single file says it is the tiny model (modelspec metadata, as real checkpoints carry it).
TINY_METADATA = {"modelspec.architecture": "sd_blender-tiny"}

# --- the tiny model in the original single-file layout (what A1111/ComfyUI users keep) -----------
# diffusers reads this layout (from_single_file) but has no writer; these are the inverse of its
# key conversions for any UNet/VAE depth, checked in test_registry.py by loading the file back.

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


def _ldm_key(key: str, pairs: list[tuple[str, str]]) -> str:
    """A diffusers key in the LDM layout: its prefix by `pairs`, a resnet's layer names by _RESNET."""
    diffusers_prefix, ldm_prefix = next(pair for pair in pairs if key.startswith(pair[0]))
    rest = key[len(diffusers_prefix):]
    if ".resnets." in diffusers_prefix:
        rest = next((new + rest[len(old):] for old, new in _RESNET if rest.startswith(old)), rest)
    return ldm_prefix + rest


def _unet_to_ldm(state: dict, config: dict) -> dict:
    pairs = _unet_prefixes(config)
    return {"model.diffusion_model." + _ldm_key(key, pairs): value for key, value in state.items()}


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


def fake_safetensors(path: Path, shapes: dict, metadata: dict | None = None) -> Path:
    """A small safetensors file whose tensor names and shapes look like a real model's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path), metadata=metadata)
    return path


# A LoRA's header as kohya-ss writes it for SD 1.x (shapes only: its weights are zeros).
SD15_LORA = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4),
}


def tiny_lora(pipeline_dir: Path, target: Path, seed: int) -> None:
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


def toy_sdxl_folders(tiny_dir: Path, models: Path) -> None:
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


def toy_union(unet_folder: Path, out: Path, num_control_type: int) -> None:
    """A Union ControlNet for the toy SDXL UNet; its output layers are random (a new one's are
    zero), so each control mode changes the image as a trained one does."""
    from diffusers import ControlNetUnionModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(unet_folder)
    shape = ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8)).config
    channels = unet.config.block_out_channels[0]
    torch.manual_seed(7)
    config = {key: value for key, value in shape.items() if key != "_use_default_values"}
    config.update(num_control_type=num_control_type, num_trans_channel=channels, num_trans_head=2, num_proj_channel=channels)
    union = ControlNetUnionModel.from_config(config)
    with torch.no_grad():
        for layer in [*union.controlnet_down_blocks, union.controlnet_mid_block, union.spatial_ch_projs]:
            torch.nn.init.normal_(layer.weight, std=0.5)
    union.save_pretrained(out, safe_serialization=True)


# --- the toy SDXL ----------------------------------------------------------------------------------
# The carried SDXL configuration with every width and depth shrunk; everything else (block types,
# linear projections, text_time embedding, scheduler, VAE scaling factor, token ids) stays.
_TOY_XL_UNET = {
    "block_out_channels": [16, 32, 64],
    "attention_head_dim": [1, 2, 4],
    "transformer_layers_per_block": [1, 1, 2],
    "norm_num_groups": 8,
    "addition_time_embed_dim": 8,
    "sample_size": 32,
}
_TOY_XL_TEXT = {
    "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "projection_dim": 32
}
# The second text encoder is wider than the first, as in SDXL (768 and 1280): the single-file
# reader tells the two apart by that width.
_TOY_XL_TEXT_2 = {**_TOY_XL_TEXT, "hidden_size": 48, "intermediate_size": 96, "projection_dim": 48}
_TOY_XL_VAE = {"block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64}


def _carried(*parts: str) -> dict:
    return json.loads((CONFIGS_DIR.joinpath(*parts)).read_text(encoding="utf-8"))


def _round_to_half(module: torch.nn.Module) -> torch.nn.Module:
    """Weights that float16 holds exactly, so a float16 single file keeps the float32 folder's weights."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return module


def toy_sdxl_pipeline(seed: int = 0):
    """A StableDiffusionXLPipeline shaped like the carried SDXL configuration at toy sizes, with
    the carried CLIP tokenizers (the ones the server gives SDXL single files)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from sd_blender_server.model_sources import carried_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizers = carried_tokenizers("sdxl")
    unet_config = {**_carried("sdxl", "unet", "config.json"), **_TOY_XL_UNET}
    unet_config["cross_attention_dim"] = _TOY_XL_TEXT["hidden_size"] + _TOY_XL_TEXT_2["hidden_size"]
    # Six time ids of addition_time_embed_dim each, then the pooled text embedding.
    unet_config["projection_class_embeddings_input_dim"] = 6 * 8 + _TOY_XL_TEXT_2["projection_dim"]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config)
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**{**_carried("sdxl", "text_encoder", "config.json"), **_TOY_XL_TEXT}))
    torch.manual_seed(seed + 2)
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(**{**_carried("sdxl", "text_encoder_2", "config.json"), **_TOY_XL_TEXT_2})
    )
    torch.manual_seed(seed + 3)
    vae = AutoencoderKL.from_config({**_carried("sdxl", "vae", "config.json"), **_TOY_XL_VAE})
    scheduler = EulerDiscreteScheduler.from_config(_carried("sdxl", "scheduler", "scheduler_config.json"))
    for module in (unet, text_encoder, text_encoder_2, vae):
        _round_to_half(module.eval())
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=_carried("sdxl", "model_index.json")["force_zeros_for_empty_prompt"],
        **tokenizers,
    )


def write_config_folder(pipeline_dir: Path, target: Path) -> None:
    """The configuration of a diffusers pipeline folder without its weights or tokenizers: what
    the server carries for a family's single files (configs/sd15, configs/sdxl)."""
    target.mkdir(parents=True)
    shutil.copy(pipeline_dir / "model_index.json", target / "model_index.json")
    for config in pipeline_dir.glob("*/*config.json"):
        if config.parent.name.startswith("tokenizer"):
            continue
        (target / config.parent.name).mkdir(exist_ok=True)
        shutil.copy(config, target / config.parent.name / config.name)


def configs_with(family: str, config_folder: Path, target: Path) -> Path:
    """A copy of the server's carried configs/ in which `family` has `config_folder`'s configuration."""
    shutil.copytree(CONFIGS_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(target / family)
    write_config_folder(config_folder, target / family)
    return target


# --- SGM/LDM layouts --------------------------------------------------------------------------------
_ADD_EMBEDDING = (("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."))


def unet_to_ldm(state: dict, config: dict) -> dict:
    """A diffusers UNet state dict in the LDM/SGM layout, SDXL's text_time embedding (label_emb) included."""
    converted = _unet_to_ldm({key: value for key, value in state.items() if not key.startswith("add_embedding.")}, config)
    for old, new in _ADD_EMBEDDING:
        for key, value in state.items():
            if key.startswith(old):
                converted["model.diffusion_model." + new + key[len(old):]] = value
    return converted


def _clip_keys(state: dict) -> dict:
    """transformers >= 5.6 saves CLIPTextModel without its `text_model.` prefix; checkpoints have it."""
    return {
        (key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key): value
        for key, value in state.items()
    }


def clip_to_open_clip(state: dict, prefix: str) -> dict:
    """A CLIPTextModelWithProjection state dict in OpenCLIP's layout (SDXL's second text encoder):
    fused q/k/v (`attn.in_proj_weight`), `ln_1`/`ln_2`, `mlp.c_fc`/`mlp.c_proj`, a transposed
    `text_projection` matrix."""
    state = _clip_keys(state)
    converted = {
        prefix + "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": state["text_model.final_layer_norm.bias"],
        prefix + "text_projection": state["text_projection.weight"].T.contiguous(),
        prefix + "logit_scale": torch.tensor(4.6052),  # in every SDXL checkpoint; unused for generation
    }
    layers = sorted({int(key.split(".")[3]) for key in state if key.startswith("text_model.encoder.layers.")})
    renames = (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."),
               ("self_attn.out_proj.", "attn.out_proj."))
    for index in layers:
        source, target = f"text_model.encoder.layers.{index}.", f"{prefix}transformer.resblocks.{index}."
        for kind in ("weight", "bias"):
            converted[target + f"attn.in_proj_{kind}"] = torch.cat(
                [state[source + f"self_attn.{name}_proj.{kind}"] for name in ("q", "k", "v")]
            )
        for key, value in state.items():
            rest = key[len(source):]
            if not key.startswith(source) or rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
                continue
            old, new = next(pair for pair in renames if rest.startswith(pair[0]))
            converted[target + new + rest[len(old):]] = value
    return converted


def sgm_checkpoint(unet: tuple[dict, dict], vae: tuple[dict, dict], text: dict, text_2: dict) -> dict:
    """SDXL's components ((state, config) for the UNet and VAE, state dicts for the text encoders)
    as the state dict of ONE SGM checkpoint (sd_xl_base_1.0.safetensors' layout)."""
    state = unet_to_ldm(*unet)
    state.update(_vae_to_ldm(*vae))
    for key, value in _clip_keys(text).items():
        state["conditioner.embedders.0.transformer." + key] = value
    # Real checkpoints carry the position ids buffer (int64) that transformers no longer saves.
    state["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    state.update(clip_to_open_clip(text_2, "conditioner.embedders.1.model."))
    return state


def ldm_checkpoint(unet: tuple[dict, dict], vae: tuple[dict, dict], text: dict) -> dict:
    """SD 1.x's components as the state dict of ONE LDM checkpoint (v1-5-pruned-emaonly's layout)."""
    state = {**_unet_to_ldm(*unet), **_vae_to_ldm(*vae)}
    for key, value in _clip_keys(text).items():
        state["cond_stage_model.transformer." + key] = value
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return state


def sdxl_to_ldm(pipeline_dir: Path, dtype: torch.dtype = torch.float16) -> dict:
    """An SDXL diffusers folder as ONE SGM checkpoint's state dict, float16 as most are shared."""
    def component(name: str, weights: str = "diffusion_pytorch_model.safetensors") -> tuple[dict, dict]:
        return load_file(pipeline_dir / name / weights), json.loads((pipeline_dir / name / "config.json").read_text())

    text, text_2 = (load_file(pipeline_dir / name / "model.safetensors") for name in ("text_encoder", "text_encoder_2"))
    state = sgm_checkpoint(component("unet"), component("vae"), text, text_2)
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}


def save_state(state: dict, target: Path, metadata: dict | None = None) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(target), metadata=metadata)
    return target


def controlnet_to_ldm(state: dict, config: dict, prefix: str = "control_model.") -> dict:
    """A diffusers ControlNetModel state dict in lllyasviel's original layout (control_v11p_sd15_*)."""
    hint_blocks = len(config["conditioning_embedding_out_channels"]) * 2 - 2
    # A ControlNet is a UNet's encoder: the UNet's names for its down and mid blocks.
    unet_config = {**config, "up_block_types": [name.replace("Down", "Up") for name in reversed(config["down_block_types"])]}
    pairs = [pair for pair in _unet_prefixes(unet_config) if not pair[0].startswith(("up_blocks.", "conv_norm_out.", "conv_out."))]
    pairs += [
        ("controlnet_cond_embedding.conv_in.", "input_hint_block.0."),
        ("controlnet_cond_embedding.conv_out.", f"input_hint_block.{2 * hint_blocks + 2}."),
        ("controlnet_mid_block.", "middle_block_out.0."),
        *_ADD_EMBEDDING,
    ]
    pairs += [(f"controlnet_cond_embedding.blocks.{index}.", f"input_hint_block.{2 * index + 2}.") for index in range(hint_blocks)]
    pairs += [(f"controlnet_down_blocks.{index}.", f"zero_convs.{index}.0.") for index in range(64)]
    return {prefix + _ldm_key(key, pairs): value for key, value in state.items()}


# --- kohya-ss LoRAs ---------------------------------------------------------------------------------
def _sgm_name(name: str, config: dict) -> str:
    """A diffusers UNet module path in the SGM naming kohya-ss uses for SDXL (input_blocks.4.1...)."""
    for diffusers_prefix, ldm_prefix in _unet_prefixes(config):
        if name.startswith(diffusers_prefix):
            rest = name[len(diffusers_prefix):] + "."
            if ".resnets." in diffusers_prefix:
                rest = next((new + rest[len(old):] for old, new in _RESNET if rest.startswith(old)), rest)
            return (ldm_prefix + rest).rstrip(".")
    return name


def kohya_lora(
    unet,
    text_encoders: dict,
    seed: int,
    rank: int = 4,
    alpha: float = 2.0,
    sgm: bool = False,
    conv_blocks: tuple[str, ...] = ("down_blocks.0.resnets.0.conv1",),
) -> dict:
    """A kohya-ss LoRA (random, non-zero) for a UNet and text encoders ({"te": encoder} for SD 1.x,
    {"te1": ..., "te2": ...} for SDXL): every Linear and 1x1 convolution in the UNet's transformer
    blocks (attn1/attn2 to_q/k/v/out, ff, proj_in/proj_out), LoCon 3x3 convolutions in
    `conv_blocks`, and the text encoders' attention and MLP layers. Names as kohya writes them:
    module path with `_` for `.`; the diffusers UNet naming (SD 1.x) or the SGM one (`sgm`)."""
    generator = torch.Generator().manual_seed(seed)
    lora = {}

    def add(name: str, module) -> None:
        if isinstance(module, torch.nn.Linear):
            down = torch.randn(rank, module.in_features, generator=generator)
            up = torch.randn(module.out_features, rank, generator=generator)
        else:
            kernel = module.kernel_size
            down = torch.randn(rank, module.in_channels, *kernel, generator=generator)
            up = torch.randn(module.out_channels, rank, 1, 1, generator=generator)
        lora[name + ".lora_down.weight"] = down * 0.3
        lora[name + ".lora_up.weight"] = up * 0.3
        lora[name + ".alpha"] = torch.tensor(float(alpha))

    for name, module in unet.named_modules():
        linear = isinstance(module, torch.nn.Linear) or (isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1))
        if not ((".attentions." in name and linear) or name in conv_blocks):
            continue
        path = _sgm_name(name, unet.config) if sgm else name
        add("lora_unet_" + path.replace(".", "_"), module)
    for prefix, encoder in text_encoders.items():
        for name, module in encoder.named_modules():
            if isinstance(module, torch.nn.Linear) and (".self_attn." in name or ".mlp." in name):
                path = name if name.startswith("text_model.") else "text_model." + name
                add(f"lora_{prefix}_" + path.replace(".", "_"), module)
    return lora


def kohya_module_deltas(lora: dict, weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The weight change each kohya LoRA module makes at a weight: weight * alpha / rank * up @ down,
    by kohya module name."""
    deltas = {}
    for key in lora:
        if not key.endswith(".lora_down.weight"):
            continue
        name = key[: -len(".lora_down.weight")]
        down, up = lora[key], lora[name + ".lora_up.weight"]
        scale = weight * float(lora[name + ".alpha"]) / down.shape[0]
        delta = up.flatten(1) @ down.flatten(1)
        deltas[name] = scale * delta.reshape(up.shape[0], *down.shape[1:])
    return deltas


def merge_kohya(unet, text_encoders: dict, lora: dict, weight: float = 1.0, sgm_config: dict | None = None) -> None:
    """Add a kohya LoRA into the modules' weights (the reference its loading must match)."""
    names = {}
    for name, module in unet.named_modules():
        path = _sgm_name(name, sgm_config) if sgm_config else name
        names["lora_unet_" + path.replace(".", "_")] = module
    for prefix, encoder in text_encoders.items():
        for name, module in encoder.named_modules():
            path = name if name.startswith("text_model.") else "text_model." + name
            names[f"lora_{prefix}_" + path.replace(".", "_")] = module
    with torch.no_grad():
        for name, delta in kohya_module_deltas(lora, weight).items():
            names[name].weight += delta


# --- a server whose carried configs are replaced ----------------------------------------------------
def server_with_configs(configs_dir: Path, folder: Path) -> Path:
    """An executable that runs the real server (as python -m sd_blender_server) with
    registry.CONFIGS_DIR pointing at `configs_dir`: the single-file loading code is the real one,
    fed a toy's configuration for its family. For running_server via $SD_BLENDER_SERVER."""
    launcher = folder / "toy_configs_server.py"
    launcher.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from sd_blender_server import registry\n"
        f"registry.CONFIGS_DIR = Path({str(configs_dir)!r})\n"
        "from sd_blender_server.cli import main\n"
        "sys.exit(main())\n",
        encoding="utf-8",
    )
    script = folder / "sd-blender-server-toy-configs"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(launcher))} "$@"\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


# --- inpainting checkpoints -------------------------------------------------------------------------
def inpainting_folder(pipeline_dir: Path, target: Path, seed: int = 0) -> Path:
    """A copy of a diffusers SD or SDXL pipeline folder whose UNet is an inpainting checkpoint's:
    9 input channels (the latents, the mask, the masked image's latents), random weights."""
    from diffusers import UNet2DConditionModel

    shutil.copytree(pipeline_dir, target)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**UNet2DConditionModel.load_config(pipeline_dir / "unet"), "in_channels": 9})
    unet.save_pretrained(target / "unet", safe_serialization=True)
    return target


def tiny_taesd(target: Path, seed: int = 0) -> Path:
    """A TAESD-shaped AutoencoderTiny (4 latent channels, 8x upsampling) with random weights and few
    channels, as a diffusers folder: what the server looks for as `taesd` in a models folder."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
    )
    model.save_pretrained(target, safe_serialization=True)
    return target
