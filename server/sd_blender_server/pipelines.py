"""diffusers pipelines around already loaded components: the pipeline class for a family and a
job's kind, its scheduler, and the arguments of a job's controls. Nothing here loads weights."""
from __future__ import annotations

import diffusers
import torch
from diffusers import (
    ControlNetUnionModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLControlNetUnionImg2ImgPipeline,
    StableDiffusionXLControlNetUnionInpaintPipeline,
    StableDiffusionXLControlNetUnionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from .catalog import UNION_CONTROL_MODES
from .errors import RequestRefused
from .registry import INPAINTING_UNET_CHANNELS
from .request import GenerationRequest
from .schedulers import SCHEDULERS

# family: {kind of job: (pipeline without ControlNets, pipeline with ControlNets)}
_PIPELINES = {
    "sdxl": {
        "txt2img": (StableDiffusionXLPipeline, StableDiffusionXLControlNetPipeline),
        "img2img": (StableDiffusionXLImg2ImgPipeline, StableDiffusionXLControlNetImg2ImgPipeline),
        "inpaint": (StableDiffusionXLInpaintPipeline, StableDiffusionXLControlNetInpaintPipeline),
    },
    "sd15": {
        "txt2img": (StableDiffusionPipeline, StableDiffusionControlNetPipeline),
        "img2img": (StableDiffusionImg2ImgPipeline, StableDiffusionControlNetImg2ImgPipeline),
        "inpaint": (StableDiffusionInpaintPipeline, StableDiffusionControlNetInpaintPipeline),
    },
}
_UNION_PIPELINES = {
    "txt2img": StableDiffusionXLControlNetUnionPipeline,
    "img2img": StableDiffusionXLControlNetUnionImg2ImgPipeline,
    "inpaint": StableDiffusionXLControlNetUnionInpaintPipeline,
}


def txt2img_class(family: str | None):
    """The pipeline class a base model of this family loads as."""
    return _pipelines_for(family)["txt2img"][0]


def _pipelines_for(family: str | None) -> dict:
    return _PIPELINES["sdxl" if family == "sdxl" else "sd15"]


def build_pipeline(
    components: dict,
    scheduler_config,
    family: str | None,
    controlnets: list,
    kind: str,
    scheduler: str,
):
    """A pipeline around the shared, already loaded components (one Union ControlNet runs every
    control of its job) for a `kind` of job: txt2img, img2img or inpaint."""
    chosen = SCHEDULERS[scheduler]
    scheduler_class = getattr(diffusers, chosen.diffusers_class)
    components = {**components, "scheduler": scheduler_class.from_config(scheduler_config, **chosen.options)}
    plain_class, control_class = _pipelines_for(family)[kind]
    if txt2img_class(family) is StableDiffusionPipeline:
        components["requires_safety_checker"] = False
    if controlnets:
        if is_union(controlnets):
            control_class = _union_pipeline(kind, components["unet"])
            controlnets = controlnets[:1]
        pipeline_class = control_class
        components["controlnet"] = controlnets[0] if len(controlnets) == 1 else controlnets
    else:
        pipeline_class = plain_class
    pipeline = pipeline_class(**components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def is_inpainting_unet(unet) -> bool:
    """Whether a UNet is an inpainting checkpoint's (it runs only in inpainting pipelines)."""
    return unet.config.in_channels == INPAINTING_UNET_CHANNELS


def _union_pipeline(kind: str, unet):
    if kind == "inpaint" and is_inpainting_unet(unet):
        raise RequestRefused(
            "a ControlNet Union model cannot inpaint with an inpainting checkpoint (9-channel UNet): "
            "use a regular checkpoint of the same family, or other ControlNets"
        )
    return _UNION_PIPELINES[kind]


def is_union(controlnets: list) -> bool:
    return isinstance(controlnets[0], ControlNetUnionModel)


def image_arguments(batch: list[GenerationRequest], inpaint: bool) -> dict:
    """The pipeline arguments of the images of a batch of jobs alike but for their images: their
    size (txt2img), init images and strength (img2img), and masks (inpainting). An inpainting
    checkpoint runs every job as inpainting: without a mask it repaints everything (a white mask),
    and without an init image it starts from pure noise (strength 1) around an empty masked image,
    as A1111 runs such models."""
    first = batch[0]
    size = {"width": first.width, "height": first.height}
    if not inpaint:
        if first.init_image is None:
            return size
        return {"image": [fit(request.init_image, **size) for request in batch], "strength": first.strength}
    blank = Image.new("RGB", (first.width, first.height))
    white = Image.new("L", (first.width, first.height), 255)
    return {
        **size,  # inpainting pipelines default to the UNet's sample size, not the image's
        "image": [fit(blank if request.init_image is None else request.init_image, **size) for request in batch],
        "mask_image": [fit(white if request.mask_image is None else request.mask_image, **size) for request in batch],
        "strength": 1.0 if first.init_image is None else first.strength,
    }


def keep_unmasked(images: list[Image.Image], request: GenerationRequest) -> list[Image.Image]:
    """The generated images with the init image's own pixels where the mask is black, blended where it
    is gray: the VAE's round trip would blur what the mask keeps (A1111 pastes them back too)."""
    if request.mask_image is None:
        return images
    size = (request.width, request.height)
    init, mask = fit(request.init_image, *size), fit(request.mask_image, *size)
    return [Image.composite(image, init, mask) for image in images]


def control_arguments(batch: list[GenerationRequest], controlnets: list, takes_image: bool) -> dict:
    """The pipeline arguments of the controls of a batch of jobs alike but for their images: images
    (each control's, of every job, as one batch), weights, step ranges; a Union ControlNet also
    takes each control's mode. In a pipeline that `takes_image` of its own (img2img, inpainting)
    the control images are `control_image`."""
    first = batch[0]
    images = [
        _one_batch([fit(request.controls[index].image, first.width, first.height) for request in batch])
        for index in range(len(first.controls))
    ]
    weights = [control.weight for control in first.controls]
    arguments = {
        "control_guidance_start": [control.start for control in first.controls],
        "control_guidance_end": [control.end for control in first.controls],
        "guess_mode": first.guess_mode,
    }
    if is_union(controlnets):
        modes = [UNION_CONTROL_MODES[control.type] for control in first.controls]
        modes_held = controlnets[0].config.num_control_type
        for control, mode in zip(first.controls, modes):
            if mode >= modes_held:
                raise RequestRefused(
                    f"this ControlNet Union model has {modes_held} control modes, none for "
                    f"'{control.type}' (mode {mode}: the ProMax version has it)"
                )
        return {**arguments, "control_image": images, "control_mode": modes, "controlnet_conditioning_scale": weights}
    single = len(images) == 1
    return {
        **arguments,
        "control_image" if takes_image else "image": images[0] if single else images,
        "controlnet_conditioning_scale": weights[0] if single else weights,
    }


def _one_batch(images: list[Image.Image]) -> Image.Image | torch.Tensor:
    """One image as it is; several as one tensor batch, which the pipelines take for each of
    several ControlNets too (a list of lists they take only in txt2img)."""
    if len(images) == 1:
        return images[0]
    return VaeImageProcessor.numpy_to_pt(VaeImageProcessor.pil_to_numpy(images))


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Control, init and mask images are stretched to the output size when theirs differs."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)
