"""diffusers pipelines around already loaded components: the pipeline class for a family and a
job's kind, its scheduler, and the arguments of a job's controls. Nothing here loads weights."""
from __future__ import annotations

import diffusers
from diffusers import (
    ControlNetUnionModel,
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
)
from PIL import Image

from .catalog import UNION_CONTROL_MODES
from .errors import RequestRefused
from .request import GenerationRequest
from .schedulers import SCHEDULERS

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


def txt2img_class(family: str | None):
    """The pipeline class a base model of this family loads as."""
    return _pipelines_for(family)[0]


def _pipelines_for(family: str | None) -> tuple:
    return _PIPELINES["sdxl" if family == "sdxl" else "sd15"]


def build_pipeline(components: dict, scheduler_config, family: str | None, controlnets: list, img2img: bool, scheduler: str):
    """A pipeline around the shared, already loaded components (one Union ControlNet runs every
    control of its job)."""
    chosen = SCHEDULERS[scheduler]
    scheduler_class = getattr(diffusers, chosen.diffusers_class)
    components = {**components, "scheduler": scheduler_class.from_config(scheduler_config, **chosen.options)}
    txt2img, img2img_class, control_class, control_img2img_class = _pipelines_for(family)
    if txt2img is StableDiffusionPipeline:
        components["requires_safety_checker"] = False
    if controlnets:
        if is_union(controlnets):
            control_class, control_img2img_class = _UNION_PIPELINES
            controlnets = controlnets[:1]
        pipeline_class = control_img2img_class if img2img else control_class
        components["controlnet"] = controlnets[0] if len(controlnets) == 1 else controlnets
    else:
        pipeline_class = img2img_class if img2img else txt2img
    pipeline = pipeline_class(**components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def is_union(controlnets: list) -> bool:
    return isinstance(controlnets[0], ControlNetUnionModel)


def control_arguments(request: GenerationRequest, controlnets: list, img2img: bool) -> dict:
    """The pipeline arguments of a job's controls: images, weights, step ranges; a Union
    ControlNet also takes each control's mode."""
    images = [fit(control.image, request.width, request.height) for control in request.controls]
    weights = [control.weight for control in request.controls]
    arguments = {
        "control_guidance_start": [control.start for control in request.controls],
        "control_guidance_end": [control.end for control in request.controls],
        "guess_mode": request.guess_mode,
    }
    if is_union(controlnets):
        modes = [UNION_CONTROL_MODES[control.type] for control in request.controls]
        modes_held = controlnets[0].config.num_control_type
        for control, mode in zip(request.controls, modes):
            if mode >= modes_held:
                raise RequestRefused(
                    f"this ControlNet Union model has {modes_held} control modes, none for "
                    f"'{control.type}' (mode {mode}: the ProMax version has it)"
                )
        return {**arguments, "control_image": images, "control_mode": modes, "controlnet_conditioning_scale": weights}
    single = len(images) == 1
    return {
        **arguments,
        "control_image" if img2img else "image": images[0] if single else images,
        "controlnet_conditioning_scale": weights[0] if single else weights,
    }


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Control and init images are stretched to the output size when theirs differs."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)
