"""Which queued jobs can share one pipeline call: those whose batch keys are equal. A key is
everything the pipeline takes once per call; what each job has of its own (prompts, seed, images)
goes to the pipeline per image, so it may differ. No torch here."""
from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import TYPE_CHECKING

from .frame_request import FrameRequest
from .request import GenerationRequest
from .texture_request import TextureRequest

if TYPE_CHECKING:
    from .catalog import Catalog


def image_count(request: GenerationRequest | TextureRequest | FrameRequest) -> int:
    """The images a job makes, what counts against --max-batch: a texture job's views and a frame
    job's frames make one each."""
    if isinstance(request, TextureRequest):
        return len(request.views)
    if isinstance(request, FrameRequest):
        return len(request.frames)
    return request.num_images


def batch_key(request: GenerationRequest, catalog: Catalog) -> Hashable:
    """What a job shares with every job it can run with as one pipeline call (Runner.run): its
    settings but its prompts, seed, images and preview rate, with the models it names resolved (a
    null model is the default one), its kind (txt2img, img2img, inpainting), and for SDXL whether it
    has a negative prompt (none gives zero embeddings, which an empty one among others would not).
    Any field GenerationRequest gains is shared unless cleared here. Raises ValueError for a model
    this catalog lacks."""
    base = catalog.base_source(request.model)
    settings = dataclasses.replace(
        request, model=base.name, prompt="", negative_prompt="", seed=None, preview_every=0,
        init_image=None, mask_image=None, controls=(),
    )
    controls = tuple(
        (catalog.controlnet_key(control), dataclasses.replace(control, model=None, image=None))
        for control in request.controls
    )
    kind = (request.init_image is not None, request.mask_image is not None)
    zero_negative = base.family == "sdxl" and not request.negative_prompt
    return settings, controls, kind, zero_negative
