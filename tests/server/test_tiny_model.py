"""The tiny model is built from the real classes and loads back through from_pretrained."""
import hashlib

import torch
from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel
from sd_blender_server.tiny import CONTROL_TYPES, TINY_VERSION, controlnet_dir, ensure_tiny_model
from transformers import CLIPTextModel, CLIPTokenizer


def _digests(folder):
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_tiny_model_loads_as_a_real_sd15_pipeline(tiny_cache):
    folder = ensure_tiny_model(tiny_cache)
    pipeline = StableDiffusionPipeline.from_pretrained(folder / "pipeline", safety_checker=None)
    assert isinstance(pipeline.unet, UNet2DConditionModel)
    assert isinstance(pipeline.vae, AutoencoderKL)
    assert isinstance(pipeline.text_encoder, CLIPTextModel)
    assert isinstance(pipeline.tokenizer, CLIPTokenizer)
    assert pipeline.vae_scale_factor == 8
    assert pipeline.unet.config.in_channels == 4
    assert list((folder / "pipeline" / "unet").glob("*.safetensors"))

    ids = pipeline.tokenizer("the depth of a cube", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    assert ids[0] == pipeline.tokenizer.bos_token_id
    assert max(ids) < pipeline.text_encoder.config.vocab_size
    assert len(pipeline.tokenizer.tokenize("the")) == 1  # the merges apply

    for control_type in CONTROL_TYPES:
        controlnet = ControlNetModel.from_pretrained(controlnet_dir(folder, control_type))
        latents = torch.zeros(1, 4, 8, 12)
        condition = torch.zeros(1, 3, 64, 96)  # an image 8x the latent size, like real SD
        hidden = torch.zeros(1, 77, pipeline.text_encoder.config.hidden_size)
        down, mid = controlnet(latents, 1, hidden, condition, return_dict=False)
        assert down[0].shape[-2:] == (8, 12)


def test_tiny_build_is_deterministic_and_kept(tiny_cache, tmp_path):
    folder = ensure_tiny_model(tiny_cache)
    mtime = (folder / "pipeline" / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_model(tiny_cache) == folder
    assert (folder / "pipeline" / "model_index.json").stat().st_mtime_ns == mtime

    rebuilt = ensure_tiny_model(tmp_path)
    assert _digests(rebuilt) == _digests(folder)
    assert [path.name for path in tmp_path.iterdir()] == [TINY_VERSION]  # no staging folder left
