"""The runner: owns the device and what is loaded on it (one base model, its ControlNets, a job's
LoRAs) and runs one job at a time. One thread (the engine's caller) uses it; what is loaded is
published as an immutable Loaded snapshot, which other threads may read at any time."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
from diffusers import ControlNetModel, ControlNetUnionModel
from PIL import Image

from . import tiny
from .acceleration import AccelerationSettings, Accelerator, default_dtype
from .config import AccelerationOptions
from .controlnet_window import skip_when_unscaled
from .cross_frame import cross_frame_attention
from .errors import JobCancelled, ModelLoadError
from .model_sources import ModelSource, carried_tokenizers, load_model, single_file_config
from .pipelines import (
    build_pipeline,
    control_arguments,
    image_arguments,
    is_inpainting_unet,
    keep_unmasked,
    txt2img_class,
)
from .previews import LivePreview, PreviewDecoders, preview_size, recorded_steps
from .registry import Entry
from .request import GenerationRequest
from .schedulers import SCHEDULERS
from .tiling import seamless

log = logging.getLogger(__name__)
# diffusers renamed torch_dtype to dtype recently; torch_dtype still works in every supported version.
warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)
# diffusers still passes an argument huggingface_hub ignores now.
warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated", category=UserWarning)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
UNSUPPORTED_FAMILIES = ("sd2",)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return default_dtype(device)
    return DTYPES[dtype]


def is_out_of_memory(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or the RuntimeError other backends raise when memory runs out."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def free_memory() -> None:
    """Give back what a failed or unloaded model held: Python garbage, then the CUDA cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Loaded:
    """What is on the device: the base model's name, the ControlNets' keys, and how many times
    each was loaded."""

    base_model: str | None = None
    controlnets: frozenset = frozenset()
    base_model_loads: int = 0
    controlnet_loads: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class RunPlan:
    """What a job runs on, resolved by the catalog."""

    base: ModelSource
    controlnets: tuple[tuple[str, ModelSource], ...]  # (key, source) for each control, in order
    loras: tuple[Entry, ...]  # for each of the request's LoRAs, in order


def default_size(pipeline) -> tuple[int, int]:
    """A base model's own image size (its UNet's sample size in pixels): 512 for SD 1.5, 1024 for SDXL."""
    side = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    return side, side


class Runner:
    def __init__(
        self, device: str, dtype: str | torch.dtype, cache_dir: str | None, models_dirs: tuple[str, ...] = (),
        acceleration: AccelerationOptions = AccelerationOptions(),
    ):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.accelerator = Accelerator(AccelerationSettings.for_device(self.device, acceleration), self.device)
        self.previews = PreviewDecoders(models_dirs, self.device, self.dtype)
        self._cache_dir = cache_dir
        self._components: dict | None = None
        self._scheduler_config = None
        self._base: ModelSource | None = None
        self._controlnets: dict[str, ControlNetModel | ControlNetUnionModel] = {}
        self.loaded = Loaded()

    def _publish(self, **changes) -> None:
        """A new Loaded snapshot, replacing the last one whole."""
        self.loaded = dataclasses.replace(self.loaded, **changes)

    def load(self, source: ModelSource) -> None:
        """Load a base model, unloading the one loaded before, if another; raises ModelLoadError
        with a one-line message."""
        if self._base is not None and self._base.name == source.name:
            return
        self.unload()
        if source.family in UNSUPPORTED_FAMILIES:
            raise ModelLoadError(f"cannot load model '{source.name}': {source.family} models are not supported")
        options = {}
        if source.kind == "file":
            options["config"] = single_file_config(source, self._cache_dir)
            options.update(carried_tokenizers(source.family))
        if source.family != "sdxl":
            options.update(safety_checker=None, requires_safety_checker=False)
        pipeline = load_model(txt2img_class(source.family), source, self._cache_dir, torch_dtype=self.dtype, **options)
        try:
            pipeline.to(self.accelerator.load_device())
        except Exception as error:
            raise ModelLoadError(f"cannot put model '{source.name}' on device {self.device}: {error}") from error
        self.accelerator.prepare_base(pipeline.components)
        self._components = pipeline.components
        self._scheduler_config = pipeline.scheduler.config
        self._base = source
        self._publish(base_model=source.name, base_model_loads=self.loaded.base_model_loads + 1)
        log.info("loaded %s (%s) on %s as %s", source.name, source.location, self.device, self.dtype)
        self.accelerator.warm_up(pipeline, *default_size(pipeline))

    def unload(self) -> None:
        """Drop the loaded base model (one is kept at a time) and give its memory back."""
        if self._base is None:
            return
        log.info("unloading %s", self._base.name)
        self._components = None
        self._base = None
        self._publish(base_model=None)
        free_memory()

    def controlnet(self, key: str, source: ModelSource) -> ControlNetModel | ControlNetUnionModel:
        """The ControlNet for a key, loaded from `source` on first use and kept."""
        if key in self._controlnets:
            return self._controlnets[key]
        options = {}
        if source.kind == "file":
            folder = single_file_config(source, self._cache_dir)
            options["config"] = (
                str(tiny.controlnet_dir(tiny.tiny_model_dir(self._cache_dir), "depth"))
                if source.family == "tiny"
                else str(Path(folder) / "controlnet")
            )
        model_class = ControlNetUnionModel if source.union else ControlNetModel
        model = load_model(model_class, source, self._cache_dir, torch_dtype=self.dtype, **options).to(self.device)
        self._controlnets[key] = skip_when_unscaled(model)
        counts = dict(self.loaded.controlnet_loads)
        counts[key] = counts.get(key, 0) + 1
        self._publish(controlnets=frozenset(self._controlnets), controlnet_loads=MappingProxyType(counts))
        log.info("loaded ControlNet %s for %s", source.name, key)
        return model

    def run(
        self,
        batch: list[GenerationRequest],
        plan: RunPlan,
        on_step: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        anchored: bool = False,
        on_previews: Mapping[int, Callable[[int, int, Image.Image], None]] | None = None,
    ) -> list[Image.Image]:
        """Run requests alike but for their prompts, images and seeds (batching.batch_key) as one
        pipeline call on what `plan` names: `num_images` images each, in order. With `anchored`, the
        first is an anchor whose keys and values every self-attention layer of the others also reads
        (cross_frame.py); its images are not returned. on_previews maps a returned request's index to
        its preview callback: every request's `preview_every` steps its first image's predicted clean
        latent goes to it as (step, total, image) (previews.py). Raises JobCancelled when
        should_cancel() turns true."""
        first = batch[0]
        self.load(plan.base)
        if should_cancel and should_cancel():
            raise JobCancelled()
        skipped = 1 if anchored else 0  # the anchor's request
        targets = [
            ((skipped + index) * first.num_images, batch[skipped + index].preview_every, send)
            for index, send in (on_previews or {}).items()
        ]
        preview = self.live_preview(plan.base.family, first.width, first.height, targets)

        def step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
            if should_cancel and should_cancel():
                raise JobCancelled()
            if on_step:
                on_step(step + 1, pipeline.num_timesteps)
            if preview:
                preview.after_step(step + 1, pipeline.num_timesteps, latents)
            return tensors

        inpaint = first.mask_image is not None or is_inpainting_unet(self._components["unet"])
        kind = "inpaint" if inpaint else "img2img" if first.init_image is not None else "txt2img"
        count = first.num_images
        negative_prompts = [request.negative_prompt for request in batch]
        arguments = {
            "prompt": [request.prompt for request in batch],
            "negative_prompt": negative_prompts if any(negative_prompts) else None,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
            "num_images_per_prompt": count,
            # CPU generators give the same noise for a seed on every device.
            "generator": [
                torch.Generator("cpu").manual_seed(request.seed + index) for request in batch for index in range(count)
            ],
            "callback_on_step_end": step_end,
            **SCHEDULERS[first.scheduler].call_options,
            **image_arguments(batch, inpaint),
        }
        with self.pipeline_for(first, plan, kind) as (pipeline, controlnets):
            if controlnets:
                arguments.update(control_arguments(batch, controlnets, takes_image=kind != "txt2img"))
            models = [pipeline.unet, *controlnets]
            frames = cross_frame_attention(models, len(batch)) if anchored else contextlib.nullcontext()
            steps = recorded_steps(pipeline.scheduler) if preview else contextlib.nullcontext()
            with torch.inference_mode(), seamless([*models, pipeline.vae], first.tiling), frames, steps as latents:
                images = pipeline(**arguments).images
        kept = [
            image
            for index, request in enumerate(batch)
            for image in keep_unmasked(images[index * count: (index + 1) * count], request)
        ]
        return kept[count * skipped:]

    def live_preview(
        self, family: str | None, width: int, height: int, targets: list[tuple[int, int, Callable]]
    ) -> LivePreview | None:
        """Previews of a job of a base model's `family` and size for `targets` (previews.LivePreview's,
        those every 0 steps left out); None when none is asked for."""
        targets = [target for target in targets if target[1] > 0]
        if not targets:
            return None
        return LivePreview(self.previews.decoder(family), preview_size(width, height), targets)

    def _apply_loras(self, pipeline, request: GenerationRequest, loras: tuple[Entry, ...]) -> None:
        """Load the job's LoRAs as adapters with their weights; unloaded after the job."""
        if not loras:
            return
        names = []
        current = loras[0].name
        try:
            for index, entry in enumerate(loras):
                current = entry.name
                pipeline.load_lora_weights(entry.location, adapter_name=f"lora{index}")
                names.append(f"lora{index}")
            current = ", ".join(entry.name for entry in loras)
            pipeline.set_adapters(names, adapter_weights=[lora.weight for lora in request.loras])
        except Exception as error:
            with contextlib.suppress(ValueError):  # without peft nothing was loaded, and unloading says so
                pipeline.unload_lora_weights()
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise ModelLoadError(f"cannot apply LoRA '{current}': {detail}") from error

    @contextlib.contextmanager
    def pipeline_for(self, request: GenerationRequest, plan: RunPlan, kind: str = "txt2img"):
        """The pipeline of `plan` for a `kind` of job (txt2img, img2img, inpaint) with the request's
        scheduler and LoRAs, and its ControlNets: for run(), and for a denoising loop of the caller's
        own (synchronized.py). The LoRAs are unloaded after."""
        self.load(plan.base)
        controlnets = [self.accelerator.prepare_controlnet(self.controlnet(key, source)) for key, source in plan.controlnets]
        pipeline = build_pipeline(
            self._components, self._scheduler_config, self._base.family, controlnets, kind, request.scheduler
        )
        self._apply_loras(pipeline, request, plan.loras)
        accelerated = self.accelerator.job(
            pipeline, controlnets, request.width, request.height, loras=bool(plan.loras), tiling=request.tiling
        )
        try:
            with accelerated:
                yield pipeline, controlnets
        finally:
            if plan.loras:
                pipeline.unload_lora_weights()
