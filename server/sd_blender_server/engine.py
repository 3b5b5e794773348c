"""The generation engine: loads Stable Diffusion (one base model at a time) and its ControlNets,
applies LoRAs, runs one request. Models are named by the registry (registry.py).

No HTTP here: the engine is driven by the job worker (jobs.py) and can be driven by anything
else that owns a device. Not thread-safe: one thread calls load() and generate().
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import (
    ControlNetModel,
    ControlNetUnionModel,
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
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLControlNetUnionImg2ImgPipeline,
    StableDiffusionXLControlNetUnionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from . import hub, tiny
from .images import a1111_lora_hash, a1111_model_hash
from .model_sources import (
    ModelLoadError,
    ModelSource,
    carried_tokenizers,
    load_model,
    resolve_source,
    single_file_config,
    source_of_entry,
)
from .registry import UNION, Entry, Registry
from .schemas import SCHEDULERS, Control, JobRequest

log = logging.getLogger(__name__)
# diffusers renamed torch_dtype to dtype recently; torch_dtype still works in every supported version.
warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)
# diffusers still passes an argument huggingface_hub ignores now.
warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated", category=UserWarning)

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

# The control mode of each control type in an SDXL ControlNet Union model (xinsir's
# controlnet-union-sdxl-1.0: 0 openpose, 1 depth, 2 thick lines, 3 thin lines, 4 normal,
# 5 segmentation, 6 tile and 7 repaint in the ProMax version only).
UNION_CONTROL_MODES = {"openpose": 0, "depth": 1, "lineart": 3, "canny": 3, "normal": 4, "seg": 5, "tile": 6}


class JobCancelled(Exception):
    """Raised from the step callback when the job was cancelled."""


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


def with_seed(request: JobRequest) -> JobRequest:
    """The request with its seed chosen: a null seed becomes a random one in [0, 2**32)."""
    if request.seed is not None:
        return request
    return request.model_copy(update={"seed": secrets.randbelow(2**32)})


def _control_arguments(request: JobRequest, controlnets: list, img2img: bool) -> dict:
    """The pipeline arguments of a job's controls: images, weights, step ranges; a Union
    ControlNet also takes each control's mode."""
    images = [_fit(control.image, request.width, request.height) for control in request.controls]
    weights = [control.weight for control in request.controls]
    arguments = {
        "control_guidance_start": [control.start for control in request.controls],
        "control_guidance_end": [control.end for control in request.controls],
        "guess_mode": request.guess_mode,
    }
    union = controlnets[0] if isinstance(controlnets[0], ControlNetUnionModel) else None
    if union is not None:
        modes = [UNION_CONTROL_MODES[control.type] for control in request.controls]
        for control, mode in zip(request.controls, modes):
            if mode >= union.config.num_control_type:
                raise ValueError(
                    f"this ControlNet Union model has {union.config.num_control_type} control modes, none for "
                    f"'{control.type}' (mode {mode}: the ProMax version has it)"
                )
        return {**arguments, "control_image": images, "control_mode": modes, "controlnet_conditioning_scale": weights}
    single = len(images) == 1
    return {
        **arguments,
        "control_image" if img2img else "image": images[0] if single else images,
        "controlnet_conditioning_scale": weights[0] if single else weights,
    }


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Control and init images are stretched to the output size when theirs differs."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


_UNION_PIPELINES = (StableDiffusionXLControlNetUnionPipeline, StableDiffusionXLControlNetUnionImg2ImgPipeline)
_PIPELINES = {
    # family: (txt2img, img2img, controlnet, controlnet img2img)
    "sdxl": (
        StableDiffusionXLPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLControlNetPipeline,
        StableDiffusionXLControlNetImg2ImgPipeline,
    ),
    "sd15": (
        StableDiffusionPipeline,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionControlNetPipeline,
        StableDiffusionControlNetImg2ImgPipeline,
    ),
}
# Prefix of the internal key of a ControlNet from a models folder (served ones are keyed by type).
_REGISTRY_KEY = "models-dir:"


def _pipelines_for(family: str | None) -> tuple:
    return _PIPELINES["sdxl" if family == "sdxl" else "sd15"]


class GenerationEngine:
    def __init__(
        self,
        model: str,
        controlnets: dict[str, str],
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        cache_dir: str | None = None,
        models_dirs: list[str] | tuple[str, ...] = (),
    ):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._cache_dir = cache_dir
        self.model = resolve_source(model, cache_dir)  # the default base model
        self.controlnet_sources = {
            control_type: resolve_source(name, cache_dir, control_type) for control_type, name in controlnets.items()
        }
        self.registry = Registry()
        # The default model is registered first, so it keeps its name.
        self.registry.add(Entry(self.model.name, "base", self.model.kind, self.model.location, self.model.family))
        for models_dir in models_dirs:
            try:
                self.registry.scan(models_dir)
            except ValueError as error:
                raise ModelLoadError(str(error)) from error
        self._components: dict | None = None
        self._loaded: ModelSource | None = None
        self._file_hashes: dict[str, str] = {}
        self._scheduler_config = None
        self._controlnets: dict[str, ControlNetModel] = {}
        self.load_counts = _LoadCounts()

    @property
    def control_types(self) -> list[str]:
        """The control types served without naming a ControlNet."""
        served = set(self.controlnet_sources) - {UNION}
        if UNION in self.controlnet_sources:
            served |= set(UNION_CONTROL_MODES)
        return sorted(served)

    def _controlnet_source(self, key: str) -> ModelSource:
        if key.startswith(_REGISTRY_KEY):
            return source_of_entry(self.registry.get("controlnet", key[len(_REGISTRY_KEY):]))
        return self.controlnet_sources[key]

    def controlnet_key(self, control: Control) -> str:
        """The ControlNet that runs this control: the one named by `control.model` (a served one,
        preferring the control's own type when the name serves several, else one from a models
        folder), else the one serving `control.type`. Raises ValueError naming what is served."""
        if control.model is None:
            if control.type != UNION and control.type in self.controlnet_sources:
                return control.type
            if UNION in self.controlnet_sources and control.type in UNION_CONTROL_MODES:
                return UNION
            raise ValueError(f"no ControlNet for '{control.type}'; this server serves {', '.join(self.control_types)}")
        serving = [key for key, source in sorted(self.controlnet_sources.items()) if source.name == control.model]
        if not serving:
            if self.registry.get("controlnet", control.model) is not None:
                return _REGISTRY_KEY + control.model
            names = sorted({source.name for source in self.controlnet_sources.values()})
            names += [name for name in self.registry.names("controlnet") if name not in names]
            raise ValueError(f"no ControlNet named '{control.model}'; this server has {', '.join(names)}")
        return control.type if control.type in serving else serving[0]

    def base_source(self, name: str | None) -> ModelSource:
        """The base model a job names (None: the default); ValueError listing the names."""
        if name is None:
            return self.model
        entry = self.registry.get("base", name)
        if entry is None:
            raise ValueError(f"no base model named '{name}'; this server has {', '.join(self.registry.names('base'))}")
        return source_of_entry(entry)

    def check(self, request: JobRequest) -> list[tuple[tuple, str]]:
        """What the server cannot run in a request, as (location, message) pairs; [] when it can."""
        try:
            base, problems = self.base_source(request.model), []
        except ValueError as error:
            base, problems = None, [(("body", "model"), str(error))]
        return problems + self._control_problems(request, base) + self._lora_problems(request, base)

    def _control_problems(self, request: JobRequest, base: ModelSource | None) -> list[tuple[tuple, str]]:
        problems = []
        union_names, other_controlnets = set(), 0
        for index, control in enumerate(request.controls):
            location = ("body", "controls", index, "type" if control.model is None else "model")
            try:
                source = self._controlnet_source(self.controlnet_key(control))
            except ValueError as error:
                problems.append((location, str(error)))
                continue
            if base is not None and base.family and source.family and base.family != source.family:
                message = f"ControlNet '{source.name}' is for {source.family} but model '{base.name}' is {base.family}"
                problems.append((location, message))
            if not source.union:
                other_controlnets += 1
                continue
            union_names.add(source.name)
            if control.type not in UNION_CONTROL_MODES:
                message = f"ControlNet Union '{source.name}' has no mode for '{control.type}'; it takes "
                problems.append((("body", "controls", index, "type"), message + ", ".join(UNION_CONTROL_MODES)))
        if len(union_names) > 1 or (union_names and other_controlnets):
            message = (
                "a ControlNet Union model runs alone: use one Union model for every control of a job, or none "
                f"(this job uses {', '.join(sorted(union_names))} with others)"
            )
            problems.append((("body", "controls"), message))
        return problems

    def _lora_problems(self, request: JobRequest, base: ModelSource | None) -> list[tuple[tuple, str]]:
        problems = []
        for index, lora in enumerate(request.loras):
            location = ("body", "loras", index, "name")
            entry = self.registry.get("lora", lora.name)
            if entry is None:
                names = ", ".join(self.registry.names("lora")) or "none"
                problems.append((location, f"no LoRA named '{lora.name}'; this server has {names}"))
            elif base is not None and base.family and entry.family and base.family != entry.family:
                message = f"LoRA '{entry.name}' is for {entry.family} but model '{base.name}' is {base.family}"
                problems.append((location, message))
        return problems

    def _with_hub_family(self, source: ModelSource) -> ModelSource:
        """The source with its family read from the hub before its first download (a name says
        little), and remembered for /v1/models and the family checks."""
        if source.kind != "hub" or source.union or not hub.first_download_ahead(source.location):
            return source
        try:
            family = hub.fetch_family(source.location)
        except Exception as error:
            raise ModelLoadError(hub.load_error_message(source.name, error)) from error
        if family is None or family == source.family:
            return source
        for key, served in self.controlnet_sources.items():
            if served.name == source.name:
                self.controlnet_sources[key] = dataclasses.replace(served, family=family)
        if self.model.name == source.name:
            self.model = dataclasses.replace(self.model, family=family)
            self.registry.get("base", source.name).family = family
        return dataclasses.replace(source, family=family)

    def _learn_hub_families(self, request: JobRequest) -> None:
        try:
            base = self.base_source(request.model)
            controlnets = [self._controlnet_source(self.controlnet_key(control)) for control in request.controls]
        except ValueError:
            return  # check() reports it
        for source in [base, *controlnets]:
            self._with_hub_family(source)

    @property
    def loaded(self) -> bool:
        return self._components is not None

    def load(self, name: str | None = None) -> None:
        """Load a base model (None: the default), unloading the one loaded before, if another;
        raises ModelLoadError with a one-line message."""
        source = self.base_source(name)
        if self._components is not None and self._loaded is not None and self._loaded.name == source.name:
            return
        self.unload()
        source = self._with_hub_family(source)
        if source.family in ("sd2",):
            raise ModelLoadError(f"cannot load model '{source.name}': {source.family} models are not supported")
        options = {}
        if source.kind == "file":
            options["config"] = single_file_config(source, self._cache_dir)
            options.update(carried_tokenizers(source.family))
        if source.family != "sdxl":
            options.update(safety_checker=None, requires_safety_checker=False)
        pipeline = load_model(_pipelines_for(source.family)[0], source, self._cache_dir, torch_dtype=self.dtype, **options)
        try:
            pipeline.to(self.device)
        except Exception as error:
            raise ModelLoadError(f"cannot put model '{source.name}' on device {self.device}: {error}") from error
        self._components = pipeline.components
        self._scheduler_config = pipeline.scheduler.config
        self._loaded = source
        self.load_counts.base_model += 1
        log.info("loaded %s (%s) on %s as %s", source.name, source.location, self.device, self.dtype)

    def unload(self) -> None:
        """Drop the loaded base model (one is kept at a time) and give its memory back."""
        if self._components is None:
            return
        log.info("unloading %s", self._loaded.name if self._loaded else "the base model")
        self._components = None
        self._loaded = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def controlnet(self, key: str) -> ControlNetModel | ControlNetUnionModel:
        """The ControlNet for a key (a served control type, or one from a models folder), loaded on
        first use and kept."""
        if key in self._controlnets:
            return self._controlnets[key]
        if not key.startswith(_REGISTRY_KEY) and key not in self.controlnet_sources:
            raise ValueError(f"no ControlNet for '{key}'; this server serves {', '.join(self.control_types)}")
        source = self._with_hub_family(self._controlnet_source(key))
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
        self._controlnets[key] = model
        counts = self.load_counts.controlnets
        counts[key] = counts.get(key, 0) + 1
        log.info("loaded ControlNet %s for %s", source.name, key)
        return model

    def describe(self) -> dict:
        loaded_name = self._loaded.name if self._loaded is not None else None
        default = {
            "name": self.model.name,
            "kind": "base",
            "family": self.model.family,
            "source": self.model.kind,
            "location": self.model.location,
            "loaded": loaded_name == self.model.name,
            "default": True,
        }
        base_models = [default] + [
            {**entry.describe(), "loaded": loaded_name == entry.name, "default": False}
            for entry in self.registry.of_kind("base")
            if entry.name != self.model.name
        ]
        controlnets = [
            {
                "name": source.name,
                "type": control_type,
                **({"types": list(UNION_CONTROL_MODES)} if source.union else {}),
                "kind": "controlnet",
                "family": source.family,
                "source": source.kind,
                "location": source.location,
                "loaded": control_type in self._controlnets,
            }
            for control_type, source in sorted(self.controlnet_sources.items())
        ]
        controlnets += [
            {
                **entry.describe(),
                "type": entry.control_type,
                **({"types": list(UNION_CONTROL_MODES)} if entry.control_type == UNION else {}),
                "loaded": _REGISTRY_KEY + entry.name in self._controlnets,
            }
            for entry in self.registry.of_kind("controlnet")
        ]
        return {
            "model": loaded_name or self.model.name,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            # The loaded base model, or the default one before any is loaded.
            "base_model": next((item for item in base_models if item["loaded"]), default),
            "base_models": base_models,
            "controlnets": controlnets,
            "loras": [{**entry.describe(), "loaded": False} for entry in self.registry.of_kind("lora")],
            "refused": [
                {**entry.describe(), "kind": entry.extra.get("kind", "base"), "loaded": False}
                for entry in self.registry.of_kind("refused")
            ],
            "load_counts": {
                "base_model": self.load_counts.base_model,
                "controlnets": dict(self.load_counts.controlnets),
            },
        }

    def _file_hash(self, path: str, hash_function: Callable[[str], str]) -> str:
        """A1111's hash of a checkpoint or LoRA file, read once per file (gigabytes: seconds)."""
        if path not in self._file_hashes:
            self._file_hashes[path] = hash_function(path)
        return self._file_hashes[path]

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
            "model": request.model or self.model.name,
            "controls": [
                {
                    "type": control.type,
                    "model": self._controlnet_source(self.controlnet_key(control)).name,
                    "weight": control.weight,
                    "start": control.start,
                    "end": control.end,
                }
                for control in request.controls
            ],
        }
        if request.loras:
            parameters["loras"] = [{"name": lora.name, "weight": lora.weight} for lora in request.loras]
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
        self._learn_hub_families(request)
        problems = self.check(request)
        if problems:
            raise ValueError("; ".join(message for _, message in problems))
        self.load(request.model)
        request = with_seed(request)
        parameters = self.parameters(request)
        if self._loaded.kind == "file":
            parameters["model_hash"] = self._file_hash(self._loaded.location, a1111_model_hash)
        lora_entries = [self.registry.get("lora", lora.name) for lora in request.loras]
        lora_files = {entry.name: entry.location for entry in lora_entries if entry.source == "file"}
        if lora_files:
            parameters["lora_hashes"] = {name: self._file_hash(path, a1111_lora_hash) for name, path in lora_files.items()}
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
            arguments.update(_control_arguments(request, controlnets, img2img))
            if isinstance(controlnets[0], ControlNetUnionModel):
                controlnets = controlnets[:1]  # one Union model runs every control (check() ensures it)

        pipeline = self._pipeline(controlnets, img2img, request.scheduler)
        self._apply_loras(pipeline, request)
        try:
            with torch.inference_mode():
                images = pipeline(**arguments).images
        finally:
            if request.loras:
                pipeline.unload_lora_weights()
        return GenerationResult(images=images, parameters=parameters)

    def _apply_loras(self, pipeline, request: JobRequest) -> None:
        """Load the job's LoRAs as adapters with their weights; unloaded after the job."""
        if not request.loras:
            return
        names = []
        current = request.loras[0].name
        try:
            for index, lora in enumerate(request.loras):
                current = lora.name
                entry = self.registry.get("lora", lora.name)
                pipeline.load_lora_weights(entry.location, adapter_name=f"lora{index}")
                names.append(f"lora{index}")
            current = ", ".join(lora.name for lora in request.loras)
            pipeline.set_adapters(names, adapter_weights=[lora.weight for lora in request.loras])
        except Exception as error:
            pipeline.unload_lora_weights()
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise ModelLoadError(f"cannot apply LoRA '{current}': {detail}") from error

    def _pipeline(self, controlnets: list, img2img: bool, scheduler: str):
        """A pipeline around the shared, already loaded components: nothing is loaded here."""
        scheduler_class, overrides = _SCHEDULER_CLASSES[scheduler]
        components = {**self._components, "scheduler": scheduler_class.from_config(self._scheduler_config, **overrides)}
        txt2img_class, img2img_class, control_class, control_img2img_class = _pipelines_for(self._loaded.family)
        if txt2img_class is StableDiffusionPipeline:
            components["requires_safety_checker"] = False
        if controlnets:
            if isinstance(controlnets[0], ControlNetUnionModel):
                control_class, control_img2img_class = _UNION_PIPELINES
            pipeline_class = control_img2img_class if img2img else control_class
            components["controlnet"] = controlnets[0] if len(controlnets) == 1 else controlnets
        else:
            pipeline_class = img2img_class if img2img else txt2img_class
        pipeline = pipeline_class(**components)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline
