"""The generation engine: loads Stable Diffusion 1.5 and its ControlNets, runs one request.

No HTTP here: the engine is driven by the job worker (jobs.py) and can be driven by anything
else that owns a device. Not thread-safe: one thread calls load() and generate().
"""
from __future__ import annotations

import logging
import re
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import (
    ControlNetModel,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)
from huggingface_hub.constants import HF_HUB_CACHE
from PIL import Image

from . import tiny
from .schemas import SCHEDULERS, Control, JobRequest

log = logging.getLogger(__name__)
# diffusers renamed torch_dtype to dtype recently; torch_dtype still works in every supported version.
warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

_SCHEDULER_CLASSES = {
    "unipc": (UniPCMultistepScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "ddim": (DDIMScheduler, {"clip_sample": False}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "lms": (LMSDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
}
assert tuple(_SCHEDULER_CLASSES) == SCHEDULERS


class JobCancelled(Exception):
    """Raised from the step callback when the job was cancelled."""


class ModelLoadError(Exception):
    """A model could not be loaded; the message is one line meant for the user."""


@dataclass
class ModelSource:
    name: str  # as the user gave it
    kind: str  # tiny | hub | folder | file
    location: str  # a path, or the hub id


@dataclass
class GenerationResult:
    images: list[Image.Image]
    parameters: dict


@dataclass
class _LoadCounts:
    base_model: int = 0
    controlnets: dict[str, int] = field(default_factory=dict)


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
        return torch.float16 if device.startswith("cuda") else torch.float32
    return DTYPES[dtype]


def resolve_source(name: str, cache_dir: str | None, control_type: str | None = None) -> ModelSource:
    """Where `name` (hub id, folder, .safetensors file or `tiny`) is loaded from."""
    if name == "tiny":
        model_dir = tiny.tiny_model_dir(cache_dir)
        folder = tiny.controlnet_dir(model_dir, control_type) if control_type else model_dir / "pipeline"
        return ModelSource(name, "tiny", str(folder))
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelSource(name, "folder", str(path))
    if path.is_file() or path.suffix in (".safetensors", ".ckpt"):
        return ModelSource(name, "file", str(path))
    if _HUB_ID.match(name):
        return ModelSource(name, "hub", name)
    return ModelSource(name, "folder", str(path))


def with_seed(request: JobRequest) -> JobRequest:
    """The request with its seed chosen: a null seed becomes a random one in [0, 2**32)."""
    if request.seed is not None:
        return request
    return request.model_copy(update={"seed": secrets.randbelow(2**32)})


def _load(model_class, source: ModelSource, cache_dir: str | None, **options):
    """`from_pretrained` (hub id or folder) or `from_single_file`, with one-line errors."""
    if source.kind == "tiny":
        tiny.ensure_tiny_model(cache_dir)
    elif source.kind != "hub" and not Path(source.location).exists():
        raise ModelLoadError(f"model '{source.name}' not found: no such file or folder {source.location}")
    try:
        if source.kind == "file":
            return model_class.from_single_file(source.location, **options)
        return model_class.from_pretrained(source.location, **options)
    except Exception as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        if source.kind == "hub":
            log.debug("loading %s from the hub failed", source.name, exc_info=True)
            raise ModelLoadError(
                f"model '{source.name}' is not available offline: it is not in the Hugging Face cache "
                f"({HF_HUB_CACHE}) and could not be downloaded (details: --log-level debug)"
            ) from error
        raise ModelLoadError(f"cannot load model '{source.name}' from {source.location}: {detail}") from error


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Control and init images are stretched to the output size when theirs differs."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


class GenerationEngine:
    def __init__(
        self,
        model: str,
        controlnets: dict[str, str],
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        cache_dir: str | None = None,
    ):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._cache_dir = cache_dir
        self.model = resolve_source(model, cache_dir)
        self.controlnet_sources = {
            control_type: resolve_source(name, cache_dir, control_type) for control_type, name in controlnets.items()
        }
        self._components: dict | None = None
        self._scheduler_config = None
        self._controlnets: dict[str, ControlNetModel] = {}
        self.load_counts = _LoadCounts()

    @property
    def control_types(self) -> list[str]:
        return sorted(self.controlnet_sources)

    def controlnet_key(self, control: Control) -> str:
        """The served control type whose ControlNet runs this control: the one named by
        `control.model` (preferring the control's own type when the name serves several),
        else the one serving `control.type`. Raises ValueError naming what is served."""
        if control.model is None:
            if control.type not in self.controlnet_sources:
                raise ValueError(f"no ControlNet for '{control.type}'; this server serves {', '.join(self.control_types)}")
            return control.type
        serving = [key for key, source in sorted(self.controlnet_sources.items()) if source.name == control.model]
        if not serving:
            names = sorted({source.name for source in self.controlnet_sources.values()})
            raise ValueError(f"no ControlNet named '{control.model}'; this server has {', '.join(names)}")
        return control.type if control.type in serving else serving[0]

    @property
    def loaded(self) -> bool:
        return self._components is not None

    def load(self) -> None:
        """Load the base model once; raises ModelLoadError with a one-line message."""
        if self._components is not None:
            return
        source = self.model
        pipeline = _load(
            StableDiffusionPipeline,
            source,
            self._cache_dir,
            torch_dtype=self.dtype,
            safety_checker=None,
            requires_safety_checker=False,
        )
        try:
            pipeline.to(self.device)
        except Exception as error:
            raise ModelLoadError(f"cannot put model '{source.name}' on device {self.device}: {error}") from error
        self._components = pipeline.components
        self._scheduler_config = pipeline.scheduler.config
        self.load_counts.base_model += 1
        log.info("loaded %s (%s) on %s as %s", source.name, source.location, self.device, self.dtype)

    def controlnet(self, control_type: str) -> ControlNetModel:
        """The ControlNet for a control type, loaded on first use and kept."""
        if control_type in self._controlnets:
            return self._controlnets[control_type]
        if control_type not in self.controlnet_sources:
            raise ValueError(f"no ControlNet for '{control_type}'; this server serves {', '.join(self.control_types)}")
        source = self.controlnet_sources[control_type]
        model = _load(ControlNetModel, source, self._cache_dir, torch_dtype=self.dtype).to(self.device)
        self._controlnets[control_type] = model
        counts = self.load_counts.controlnets
        counts[control_type] = counts.get(control_type, 0) + 1
        log.info("loaded ControlNet %s for %s", source.name, control_type)
        return model

    def describe(self) -> dict:
        return {
            "model": self.model.name,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "base_model": {
                "name": self.model.name,
                "source": self.model.kind,
                "location": self.model.location,
                "loaded": self.loaded,
            },
            "controlnets": [
                {
                    "name": source.name,
                    "type": control_type,
                    "source": source.kind,
                    "location": source.location,
                    "loaded": control_type in self._controlnets,
                }
                for control_type, source in sorted(self.controlnet_sources.items())
            ],
            "load_counts": {
                "base_model": self.load_counts.base_model,
                "controlnets": dict(self.load_counts.controlnets),
            },
        }

    def parameters(self, request: JobRequest) -> dict:
        """What a job will run with, as reported to clients and written into the PNGs."""
        if request.seed is None:
            raise ValueError("choose the seed first (with_seed)")
        parameters = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "seeds": [request.seed + index for index in range(request.num_images)],
            "steps": request.steps,
            "guidance_scale": request.guidance_scale,
            "width": request.width,
            "height": request.height,
            "num_images": request.num_images,
            "scheduler": request.scheduler,
            "model": self.model.name,
            "controls": [
                {
                    "type": control.type,
                    "model": self.controlnet_sources[self.controlnet_key(control)].name,
                    "weight": control.weight,
                    "start": control.start,
                    "end": control.end,
                }
                for control in request.controls
            ],
        }
        if request.controls:
            parameters["guess_mode"] = request.guess_mode
        if request.init_image is not None:
            parameters["strength"] = request.strength
        return parameters

    def generate(
        self,
        request: JobRequest,
        on_step: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Run one request; raises JobCancelled when should_cancel() turns true."""
        self.load()
        request = with_seed(request)
        parameters = self.parameters(request)
        controlnets = [self.controlnet(self.controlnet_key(control)) for control in request.controls]
        if should_cancel and should_cancel():
            raise JobCancelled()

        def step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
            if should_cancel and should_cancel():
                raise JobCancelled()
            if on_step:
                on_step(step + 1, pipeline.num_timesteps)
            return tensors

        width, height = request.width, request.height
        arguments = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance_scale,
            "num_images_per_prompt": request.num_images,
            # CPU generators give the same noise for a seed on every device.
            "generator": [torch.Generator("cpu").manual_seed(seed) for seed in parameters["seeds"]],
            "callback_on_step_end": step_end,
        }
        img2img = request.init_image is not None
        if img2img:
            arguments.update(image=_fit(request.init_image, width, height), strength=request.strength)
        else:
            arguments.update(width=width, height=height)
        if request.controls:
            control_images = [_fit(control.image, width, height) for control in request.controls]
            single = len(request.controls) == 1
            arguments["control_image" if img2img else "image"] = control_images[0] if single else control_images
            weights = [control.weight for control in request.controls]
            arguments["controlnet_conditioning_scale"] = weights[0] if single else weights
            arguments["control_guidance_start"] = [control.start for control in request.controls]
            arguments["control_guidance_end"] = [control.end for control in request.controls]
            arguments["guess_mode"] = request.guess_mode

        pipeline = self._pipeline(controlnets, img2img, request.scheduler)
        with torch.inference_mode():
            images = pipeline(**arguments).images
        return GenerationResult(images=images, parameters=parameters)

    def _pipeline(self, controlnets: list[ControlNetModel], img2img: bool, scheduler: str):
        """A pipeline around the shared, already loaded components: nothing is loaded here."""
        scheduler_class, overrides = _SCHEDULER_CLASSES[scheduler]
        components = {**self._components, "scheduler": scheduler_class.from_config(self._scheduler_config, **overrides)}
        components["requires_safety_checker"] = False
        if controlnets:
            pipeline_class = StableDiffusionControlNetImg2ImgPipeline if img2img else StableDiffusionControlNetPipeline
            components["controlnet"] = controlnets[0] if len(controlnets) == 1 else controlnets
        else:
            pipeline_class = StableDiffusionImg2ImgPipeline if img2img else StableDiffusionPipeline
        pipeline = pipeline_class(**components)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline
