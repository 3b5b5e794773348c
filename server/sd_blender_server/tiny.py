"""The built-in `tiny` model: the real Stable Diffusion 1.5 classes at toy sizes.

Weights are seeded random numbers, so its images are noise, but every shape, dtype, file
format and code path is the real one: the folder is written with `save_pretrained` and the
engine loads it back with `from_pretrained` like any downloaded model. Built once per cache
folder; the build is deterministic, so two builds give the same files.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# One tiny ControlNet for each control type, seeded by its index in CONTROL_TYPES.
from .config import CONTROL_TYPES

TINY_VERSION = "tiny-v2"

# Small, but shaped like SD 1.5: 4 latent channels, a VAE that downsamples by 8, cross
# attention on CLIP hidden states, ControlNets whose condition embedding also downsamples by 8.
# Attention only at the lowest resolution keeps a 512x512, 20-step image around a second on a CPU.
_BLOCK_OUT_CHANNELS = (16, 32, 32)
_DOWN_BLOCKS = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
_UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
_CROSS_ATTENTION_DIM = 32
# A ControlNet copies its UNet's encoder, so both are built from these settings.
_ENCODER = {
    "in_channels": 4,
    "block_out_channels": _BLOCK_OUT_CHANNELS,
    "down_block_types": _DOWN_BLOCKS,
    "layers_per_block": 1,
    "cross_attention_dim": _CROSS_ATTENTION_DIM,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "i n", "in g</w>", "o n</w>", "e r</w>")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sd_blender"


def tiny_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The tiny model folder; `pipeline/` is a diffusers SD folder, `controlnet-<type>/` ControlNets."""
    return Path(cache_dir or default_cache_dir()) / TINY_VERSION


def controlnet_dir(model_dir: Path, control_type: str) -> Path:
    return model_dir / f"controlnet-{control_type}"


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Build the tiny model into the cache unless it is there; returns its folder."""
    return folder_built_once(tiny_model_dir(cache_dir), _build)


def folder_built_once(target: Path, build) -> Path:
    """`target`, made by build(folder) unless it is there already. Built beside it and renamed: a
    reader never sees a half-written folder, and two processes building at once both end with the
    same complete folder."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-to-character table of GPT-2/CLIP byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


def _write_tokenizer_files(folder: Path) -> int:
    characters = list(_bytes_to_unicode().values())
    tokens = characters + [c + "</w>" for c in characters]
    tokens += ["".join(merge.split()) for merge in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True)
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")
    return len(vocab)


def _build(folder: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_dir = folder / "vocab"
    vocab_size = _write_tokenizer_files(vocab_dir)
    tokenizer = CLIPTokenizer(
        vocab=str(vocab_dir / "vocab.json"), merges=str(vocab_dir / "merges.txt"), model_max_length=77
    )
    shutil.rmtree(vocab_dir)

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=_CROSS_ATTENTION_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=_CROSS_ATTENTION_DIM,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, out_channels=4, up_block_types=_UP_BLOCKS, **_ENCODER)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=512,
        mid_block_add_attention=False,
    )
    # SD 1.5's own scheduler configuration; the engine builds the requested sampler from it.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder / "pipeline", safe_serialization=True)

    for index, control_type in enumerate(CONTROL_TYPES):
        torch.manual_seed(1 + index)
        controlnet = ControlNetModel(conditioning_embedding_out_channels=(4, 4, 8, 8), **_ENCODER)
        _wake_zero_convolutions(controlnet)
        controlnet.save_pretrained(controlnet_dir(folder, control_type), safe_serialization=True)


def _wake_zero_convolutions(controlnet) -> None:
    """A new ControlNet's output convolutions are zero, so it would not change the image at all;
    random ones make the control image matter, as a trained ControlNet's does."""
    import torch

    outputs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    with torch.no_grad():
        for convolution in outputs:
            torch.nn.init.normal_(convolution.weight, std=0.5)
