"""Acceleration: what the runner applies to the models it loads, chosen per device, and what it
changes for one job. Images stay those of stock diffusers within float tolerance.

Defaults (`--no-fast-defaults` turns them all off; `--channels-last`, `--fused-qkv` and their
`--no-` forms choose one each):
- attention: diffusers gives every attention layer AttnProcessor2_0 (torch's
  scaled_dot_product_attention: flash or memory-efficient kernels where the device has them);
  nothing in the server sets a slower one. prepare_base() checks it and /health reports it.
- channels_last memory format of the UNet, ControlNets and VAE on CUDA (faster convolutions);
  not on the CPU, where no gain showed (docs/performance.md), nor on MPS (unmeasured).
- fused QKV projections (one matrix product for the queries, keys and values of self-attention,
  the keys and values of cross-attention) on CUDA; not on the CPU (no gain showed either), nor with
  low_vram (the fused weights are a copy). A job with LoRAs runs with the unfused processors:
  peft's layers wrap to_q/to_k/to_v, which a fused projection would skip.
- dtype `auto`: float16 on CUDA and MPS, float32 on the CPU (default_dtype).

Opt-in:
- compile: torch.compile of the UNet, each ControlNet and the VAE decoder, shapes static
  (dynamic=False): one graph per size and batch, compiled on its first job (logged). A ControlNet's
  step window and its weight stay out of its graph (controlnet_window.compile_in_window). Mode
  max-autotune-no-cudagraphs on CUDA, default elsewhere; `compile_mode` chooses another
  (reduce-overhead: CUDA graphs). Jobs with LoRAs run eager: each LoRA and weight would compile
  anew. Not combined with model CPU offload, whose hooks move weights inside the forward.
- low_vram: model CPU offload (accelerate: each model is moved to the GPU when it runs) on CUDA,
  and VAE tiling and slicing on every device. Seamless tiling jobs decode untiled: a tile would
  wrap around on itself, not on the image.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

from .config import AccelerationOptions
from .controlnet_window import compile_in_window

log = logging.getLogger(__name__)

# Graphs kept per compiled forward (torch's default is 8): sizes x batches x schedulers' timestep dtypes.
RECOMPILE_LIMIT = 64
SDPA_PROCESSORS = (AttnProcessor2_0, FusedAttnProcessor2_0)


def default_dtype(device: str) -> torch.dtype:
    """`--dtype auto`: float16 on CUDA and MPS, float32 on the CPU. Not bfloat16: images would drift
    further from float16's, which every SD checkpoint is published in. An SDXL VAE, which overflows
    in float16, decodes in float32 (diffusers upcasts it: its config says force_upcast)."""
    return torch.float16 if device.startswith(("cuda", "mps")) else torch.float32


@dataclass(frozen=True)
class AccelerationSettings:
    """What is applied on one device."""

    channels_last: bool
    fused_qkv: bool
    compile_mode: str | None  # None: no torch.compile
    cpu_offload: bool
    vae_tiling: bool  # and slicing

    @classmethod
    def for_device(cls, device: str, options: AccelerationOptions) -> AccelerationSettings:
        """The settings on `device`: its defaults (with fast_defaults) where `options` leave a choice
        open (None); compile and low_vram where the device allows them."""
        cuda = device.startswith("cuda")
        offload = options.low_vram and cuda
        if options.compile and offload:
            log.warning("--compile is not applied with --low-vram on CUDA: model CPU offload moves weights inside the forward")
        if options.low_vram and not cuda:
            log.info("--low-vram on %s: no model CPU offload (it needs CUDA); VAE tiling and slicing only", device)
        fast = options.fast_defaults and cuda
        return cls(
            channels_last=fast if options.channels_last is None else options.channels_last,
            fused_qkv=(fast and not options.low_vram) if options.fused_qkv is None else options.fused_qkv,
            compile_mode=(options.compile_mode or ("max-autotune-no-cudagraphs" if cuda else "default"))
            if options.compile and not offload else None,
            cpu_offload=offload,
            vae_tiling=options.low_vram,
        )


class Accelerator:
    """Applies the settings to the models the runner loads and to each job."""

    def __init__(self, settings: AccelerationSettings, device: str):
        self.settings = settings
        self.device = device
        self.attention = "sdpa"
        self._sizes_compiled: set[tuple] = set()
        if settings.compile_mode:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)

    def report(self) -> dict:
        """What is applied, for /health."""
        settings = self.settings
        return {
            "compile": settings.compile_mode is not None,
            "compile_mode": settings.compile_mode,
            "low_vram": settings.vae_tiling,
            "cpu_offload": settings.cpu_offload,
            "channels_last": settings.channels_last,
            "fused_qkv": settings.fused_qkv,
            "attention": self.attention,
        }

    def load_device(self) -> str:
        """Where a base model is put at load: the CPU when offloaded (a job moves each model in turn)."""
        return "cpu" if self.settings.cpu_offload else self.device

    def prepare_base(self, components: dict) -> None:
        """Apply the settings to a loaded base model's UNet and VAE."""
        unet, vae = components["unet"], components["vae"]
        self.attention = attention_kind(unet)
        if self.attention != "sdpa":
            log.warning("attention processors are not SDPA's: %s", self.attention)
        self._prepare_denoiser(unet)
        if self.settings.channels_last:
            vae.to(memory_format=torch.channels_last)
        if self.settings.vae_tiling:
            vae.enable_tiling()
            vae.enable_slicing()
        if self.settings.compile_mode:
            self._compile(unet)
            self._compile(vae.decoder)
        self._sizes_compiled.clear()

    def prepare_controlnet(self, controlnet: torch.nn.Module) -> torch.nn.Module:
        """Apply the settings to a ControlNet, once (the runner keeps its ControlNets). Compiled
        within its step window (controlnet_window.compile_in_window)."""
        if not getattr(controlnet, "_sd_blender_accelerated", False):
            self._prepare_denoiser(controlnet)
            if self.settings.compile_mode:
                compile_in_window(controlnet, self.settings.compile_mode)
            if self.settings.cpu_offload:
                controlnet.to("cpu")
            controlnet._sd_blender_accelerated = True
        return controlnet

    def _prepare_denoiser(self, model: torch.nn.Module) -> None:
        if self.settings.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.settings.fused_qkv:
            model.fuse_qkv_projections()

    def _compile(self, module: torch.nn.Module) -> None:
        """torch.compile in place: the module stays the object the pipelines, LoRAs and attention
        processors see."""
        module.compile(mode=self.settings.compile_mode, dynamic=False)

    def warm_up(self, pipeline, width: int, height: int) -> None:
        """Compile the UNet and VAE decoder for a size by running a short job (two steps,
        classifier-free guidance: the batch of two that most jobs run)."""
        if not self.settings.compile_mode:
            return
        log.info("compiling the UNet and VAE decoder for %dx%d (warm-up job)", width, height)
        pipeline.set_progress_bar_config(disable=True)
        with torch.inference_mode(), self.job(pipeline, [], width, height, loras=False, tiling=None):
            pipeline(prompt="", num_inference_steps=2, width=width, height=height, output_type="pil")
        log.info("compiled for %dx%d", width, height)

    @contextlib.contextmanager
    def job(self, pipeline, controlnets: list, width: int, height: int, loras: bool, tiling: str | None):
        """Within the block, `pipeline` runs one job as the settings allow: offloaded, unfused
        with LoRAs, untiled VAE for seamless tiling, eager where compiling cannot help."""
        with contextlib.ExitStack() as stack:
            models = [pipeline.unet, *controlnets]
            if loras and self.settings.fused_qkv:
                stack.enter_context(unfused(models))
            if tiling and self.settings.vae_tiling:
                stack.enter_context(untiled(pipeline.vae))
            if self.settings.compile_mode:
                stack.enter_context(self._compiled_or_eager(width, height, len(controlnets), loras))
            if self.settings.cpu_offload:
                pipeline.enable_model_cpu_offload(device=self.device)
            yield

    def _compiled_or_eager(self, width: int, height: int, controls: int, loras: bool):
        if loras:
            log.info("a job with LoRAs runs uncompiled")
            return torch.compiler.set_stance("force_eager")
        key = (width, height, controls)
        if key not in self._sizes_compiled:
            self._sizes_compiled.add(key)
            log.info("first job at %dx%d with %d ControlNet(s): compiling for it (slower)", width, height, controls)
        return contextlib.nullcontext()


def attention_kind(model: torch.nn.Module) -> str:
    """"sdpa" when every attention layer runs torch's scaled_dot_product_attention, else the
    processors' class names."""
    kinds = {type(processor) for processor in model.attn_processors.values()}
    if all(issubclass(kind, SDPA_PROCESSORS) for kind in kinds):
        return "sdpa"
    return ", ".join(sorted(kind.__name__ for kind in kinds))


@contextlib.contextmanager
def unfused(models: list):
    """The models' attention layers project queries, keys and values separately (through any LoRA
    on them) while the block runs; their own processors after it."""
    originals = [model.attn_processors for model in models]
    try:
        for model in models:
            model.set_attn_processor(AttnProcessor2_0())
        yield
    finally:
        for model, original in zip(models, originals):
            model.set_attn_processor(dict(original))


@contextlib.contextmanager
def untiled(vae):
    """The VAE decodes whole images while the block runs (slicing stays)."""
    vae.disable_tiling()
    try:
        yield
    finally:
        vae.enable_tiling()
