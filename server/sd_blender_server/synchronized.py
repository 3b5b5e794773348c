"""The synchronized texture job (SyncMVD-style): several views of one object denoised together, so
that they agree by construction. At every step each view's predicted clean latent is fused into one
latent texture (weights cos^p, p rising over the steps) and rendered back into every view; the
scheduler then goes on from the fused prediction. A loop over diffusers' own components (UNet,
ControlNets, scheduler, VAE, a pipeline's prompt encoding and image processors), not a pipeline's fork.

Texture space: texel (row, column) of a size x size texture has its centre at
u = (column + 0.5) / size, v = 1 - (row + 0.5) / size (Blender's UVs: v = 0 at the bottom).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image

from .cross_frame import self_attention_processor
from .errors import JobCancelled, RequestRefused
from .pipelines import control_arguments, fit, is_union
from .previews import LivePreview
from .schedulers import SCHEDULERS
from .texture_request import TextureRequest

# Samples are x0 + σ·ε (k-diffusion), σ = scheduler.sigmas[step].
_SIGMA_SCHEDULERS = (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, LMSDiscreteScheduler, HeunDiscreteScheduler)
# Samples are α·x0 + s·ε with α² + s² = 1, α = 1/√(σ² + 1), σ = scheduler.sigmas[step].
_VP_SIGMA_SCHEDULERS = (DPMSolverMultistepScheduler, UniPCMultistepScheduler)
# Samples are √ᾱ_t·x0 + √(1 − ᾱ_t)·ε, ᾱ_t = scheduler.alphas_cumprod[timestep].
_VP_TIMESTEP_SCHEDULERS = (DDIMScheduler, PNDMScheduler, LCMScheduler, TCDScheduler)


@dataclass(frozen=True)
class TexelMap:
    """Where the views' seen latent pixels fall in the latent texture: for each seen pixel (in the
    order of `seen.nonzero()`), the four texels around its (u, v), as flat indexes, their bilinear
    weights and the pixel's cosine."""

    size: int
    seen: torch.Tensor  # (views, h, w) bool: c > 0
    texels: torch.Tensor  # (4, seen pixels) long
    bilinear: torch.Tensor  # (4, seen pixels)
    cosines: torch.Tensor  # (seen pixels,)

    @classmethod
    def from_correspondence(cls, correspondence: torch.Tensor, size: int) -> TexelMap:
        """`correspondence`: (views, h, w, 3) u, v, c (see TextureView)."""
        seen = correspondence[..., 2] > 0
        u, v, cosines = correspondence[seen].float().unbind(-1)
        # Continuous texel coordinates, clamped to the centres of the border texels, so the four
        # corners are distinct texels and their weights add up to one.
        column = (u * size - 0.5).clamp(0, size - 1)
        row = ((1 - v) * size - 0.5).clamp(0, size - 1)
        left, top = column.floor().clamp(max=size - 2), row.floor().clamp(max=size - 2)
        right_weight, bottom_weight = column - left, row - top
        left, top = left.long(), top.long()
        texels = torch.stack([top * size + left, top * size + left + 1, (top + 1) * size + left, (top + 1) * size + left + 1])
        bilinear = torch.stack([
            (1 - right_weight) * (1 - bottom_weight),
            right_weight * (1 - bottom_weight),
            (1 - right_weight) * bottom_weight,
            right_weight * bottom_weight,
        ])
        return cls(size, seen, texels, bilinear, cosines)

    def to(self, device: torch.device | str) -> TexelMap:
        return TexelMap(self.size, *(tensor.to(device) for tensor in (self.seen, self.texels, self.bilinear, self.cosines)))


def fuse(latents: torch.Tensor, texel_map: TexelMap, exponent: float) -> torch.Tensor:
    """The views' latents (views, channels, h, w) splatted bilinearly into a (channels, size, size)
    texture with weights c^exponent and normalised; texels nothing landed on are filled from their
    nearest filled neighbours."""
    values = latents.permute(0, 2, 3, 1)[texel_map.seen].float().T  # (channels, seen pixels)
    weights = texel_map.bilinear * texel_map.cosines**exponent
    texel_count = texel_map.size**2
    sums = values.new_zeros(values.shape[0], texel_count)
    totals = values.new_zeros(texel_count)
    for texels, corner_weights in zip(texel_map.texels, weights):
        sums.index_add_(1, texels, values * corner_weights)
        totals.index_add_(0, texels, corner_weights)
    filled = totals > 0
    texture = torch.where(filled, sums / totals.clamp_min(torch.finfo(totals.dtype).tiny), 0.0)
    shape = (values.shape[0], texel_map.size, texel_map.size)
    return fill_empty_texels(texture.view(shape), filled.view(shape[1:]))


def fill_empty_texels(texture: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """Empty texels take the value of their nearest filled texel (the bilinear render reads texels
    next to the ones samples landed on), found by jump flooding: log2(size) rounds over the texture
    instead of one per texel of distance."""
    if not filled.any():
        return texture
    height, width = filled.shape
    rows, columns = torch.meshgrid(
        torch.arange(height, device=filled.device), torch.arange(width, device=filled.device), indexing="ij"
    )
    nearest = torch.where(filled, rows * width + columns, -1)  # flat index of the nearest filled texel found

    def distance(index: torch.Tensor) -> torch.Tensor:
        return (index // width - rows) ** 2 + (index % width - columns) ** 2

    # Halving steps, then one more step of 1, which mends most of jump flooding's rare misses.
    steps = [1 << power for power in reversed(range(max(height, width).bit_length()))] + [1]
    for step in steps:
        padded = F.pad(nearest, (step, step, step, step), value=-1)
        for down in (-step, 0, step):
            for right in (-step, 0, step):
                found = padded[step + down: step + down + height, step + right: step + right + width]
                closer = (found >= 0) & ((nearest < 0) | (distance(found) < distance(nearest)))
                nearest = torch.where(closer, found, nearest)
    return texture.flatten(1)[:, nearest.flatten()].view_as(texture)


def render(texture: torch.Tensor, texel_map: TexelMap, background: torch.Tensor) -> torch.Tensor:
    """The (channels, size, size) texture sampled bilinearly into every view where it is seen;
    `background` (views, channels, h, w) elsewhere."""
    flat = texture.reshape(texture.shape[0], -1)
    samples = sum(flat[:, texels] * weights for texels, weights in zip(texel_map.texels, texel_map.bilinear))
    views = background.permute(0, 2, 3, 1).clone()
    views[texel_map.seen] = samples.T.to(views.dtype)
    return views.permute(0, 3, 1, 2)


def synchronize(latents: torch.Tensor, texel_map: TexelMap, exponent: float) -> torch.Tensor:
    """The views' latents fused in the texture and rendered back: equal wherever views see the same texel."""
    return render(fuse(latents, texel_map, exponent), texel_map, latents)


def initial_noise(texel_map: TexelMap, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Unit Gaussian noise (views, channels, h, w) that agrees between views: a noise texture rendered
    into every view where the object is seen, independent noise elsewhere. A bilinear sample averages
    texels, which lowers the variance: each is divided by the root of its weights' squares' sum."""
    texture = torch.randn((shape[1], texel_map.size, texel_map.size), generator=generator)
    own = torch.randn(shape, generator=generator)
    texel_map = texel_map.to("cpu")
    rendered = render(texture, texel_map, own)
    spread = texel_map.bilinear.square().sum(0).sqrt()
    scale = torch.ones(shape[0], shape[2], shape[3])
    scale[texel_map.seen] = spread
    return rendered / scale[:, None]


class NeighbourAttention(AttnProcessor2_0):
    """Self-attention whose keys and values are the view's own tokens and its neighbour views'
    (SyncMVD's): `sources` (batch, k) are the rows of the batch each row reads, `valid` (batch, k)
    which of them are real (views have different numbers of neighbours)."""

    def __init__(self, sources: torch.Tensor, valid: torch.Tensor):
        super().__init__()
        self.sources, self.valid = sources, valid

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        batch, length, channels = hidden_states.shape
        context = hidden_states[self.sources].reshape(batch, -1, channels)
        blocked = torch.zeros(self.valid.shape, dtype=hidden_states.dtype, device=hidden_states.device)
        blocked = blocked.masked_fill(~self.valid, float("-inf")).repeat_interleave(length, dim=1)
        return super().__call__(attn, hidden_states, context, blocked[:, None], temb)


@contextlib.contextmanager
def neighbour_attention(unet, request: TextureRequest, guided: bool, device: torch.device):
    """The UNet's self-attention layers reading each view's neighbours too, while the job runs on `device`."""
    if not any(view.neighbours for view in request.views):
        yield
        return
    count = len(request.views)
    rows = [[index, *view.neighbours] for index, view in enumerate(request.views)]
    width = max(len(row) for row in rows)
    sources = torch.tensor([row + [index] * (width - len(row)) for index, row in enumerate(rows)])
    valid = torch.tensor([[True] * len(row) + [False] * (width - len(row)) for row in rows])
    if guided:  # the unconditional half of the batch reads its own half
        sources, valid = torch.cat([sources, sources + count]), torch.cat([valid, valid])
    with self_attention_processor([unet], NeighbourAttention(sources.to(device), valid.to(device))):
        yield


def exponent_at(request: TextureRequest, index: int, count: int) -> float:
    """The cos^p exponent of step `index` of `count`: rising linearly from start to end."""
    if count == 1:
        return request.exponent_start
    return request.exponent_start + (request.exponent_end - request.exponent_start) * index / (count - 1)


def noise_scales(scheduler) -> Callable[[int, torch.Tensor], tuple[float, float]]:
    """(α, s) of a scheduler's step: its samples are α·x0 + s·ε, which turns the UNet's ε into the
    predicted clean latent x0 and back. RequestRefused for a scheduler this cannot tell."""
    if scheduler.config.prediction_type != "epsilon":
        raise RequestRefused(
            f"synchronized texture jobs need a model that predicts noise; this one predicts {scheduler.config.prediction_type}"
        )
    if isinstance(scheduler, _SIGMA_SCHEDULERS):
        return lambda index, timestep: (1.0, float(scheduler.sigmas[index]))
    if isinstance(scheduler, _VP_SIGMA_SCHEDULERS):

        def by_sigma(index: int, timestep: torch.Tensor) -> tuple[float, float]:
            sigma = float(scheduler.sigmas[index])
            alpha = 1 / math.sqrt(sigma**2 + 1)
            return alpha, sigma * alpha

        return by_sigma
    if isinstance(scheduler, _VP_TIMESTEP_SCHEDULERS):

        def by_timestep(index: int, timestep: torch.Tensor) -> tuple[float, float]:
            alpha_cumprod = float(scheduler.alphas_cumprod[int(timestep)])
            return math.sqrt(alpha_cumprod), math.sqrt(1 - alpha_cumprod)

        return by_timestep
    raise RequestRefused(f"the {type(scheduler).__name__} scheduler cannot run a synchronized texture job")


@torch.inference_mode()
def denoise(
    pipeline,
    controlnets: list,
    request: TextureRequest,
    on_step: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    preview: LivePreview | None = None,
) -> list[Image.Image]:
    """Run a texture job (its seed chosen) with a pipeline's components and `controlnets` (one per
    control of a view, in order): one image per view, in the views' order. `preview` gets each
    step's fused clean latents (the views' x0, as they agree). Raises JobCancelled when
    should_cancel() turns true, RequestRefused for a scheduler or model it cannot run."""
    settings, scheduler = request.settings, pipeline.scheduler
    scales = noise_scales(scheduler)
    if pipeline.unet.config.in_channels != pipeline.vae.config.latent_channels:
        raise RequestRefused("synchronized texture jobs need a regular checkpoint, not an inpainting one")
    device = execution_device(pipeline)
    guided = settings.guidance_scale > 1
    conditioning = _prompt_conditioning(pipeline, request, guided)
    controls = _Controls.of(pipeline, controlnets, request, guided)
    correspondence = torch.from_numpy(np.stack([view.correspondence for view in request.views]))
    texel_map = TexelMap.from_correspondence(correspondence, request.texture_size)
    generator = torch.Generator("cpu").manual_seed(settings.seed)  # the same noise on every device
    shape = (len(request.views), pipeline.vae.config.latent_channels, *correspondence.shape[1:3])
    # The latents stay float32 between steps (the UNet gets its own dtype): the conversions between
    # ε and x0 divide by small numbers.
    latents = (initial_noise(texel_map, shape, generator) * scheduler.init_noise_sigma).to(device)
    texel_map = texel_map.to(device)
    scheduler.set_timesteps(settings.steps, device=device)
    timesteps = scheduler.timesteps
    eta = SCHEDULERS[settings.scheduler].call_options.get("eta", 0.0)
    step_options = pipeline.prepare_extra_step_kwargs(generator, eta)
    with neighbour_attention(pipeline.unet, request, guided, device):
        for index, timestep in enumerate(timesteps):
            if should_cancel and should_cancel():
                raise JobCancelled()
            noise = _predict_noise(pipeline, controls, request, latents, timestep, conditioning, index)
            signal, spread = scales(index, timestep)
            exponent = exponent_at(request, index, len(timesteps))
            clean = synchronize((latents - spread * noise) / signal, texel_map, exponent)
            latents = scheduler.step((latents - signal * clean) / spread, timestep, latents, **step_options).prev_sample
            if on_step:
                on_step(index + 1, len(timesteps))
            if preview:
                preview.after_step(index + 1, len(timesteps), lambda: clean)
    # Multistep schedulers end on a mix of the last predictions: fused once more, the views agree exactly.
    return _decode(pipeline, synchronize(latents, texel_map, request.exponent_end))


def execution_device(pipeline) -> torch.device:
    """Where the pipeline's models run: their device, or with model CPU offload (--low-vram) the
    GPU each is moved to for its forward while it is kept on the CPU."""
    return pipeline._execution_device


def _is_sdxl(pipeline) -> bool:
    return "text_encoder_2" in pipeline.components


def _prompt_conditioning(pipeline, request: TextureRequest, guided: bool) -> dict:
    """The UNet's and ControlNets' prompt arguments for every view (the negative prompt's first with
    guidance): CLIP hidden states, and for SDXL its pooled text embedding and size ids."""
    settings, count, device = request.settings, len(request.views), execution_device(pipeline)
    encoded = pipeline.encode_prompt(
        settings.prompt, device=device, num_images_per_prompt=count, do_classifier_free_guidance=guided,
        negative_prompt=settings.negative_prompt or None,
    )
    if not _is_sdxl(pipeline):
        return {"encoder_hidden_states": _with_negative(*encoded, guided)}
    positive, negative, pooled, negative_pooled = encoded
    # SDXL's size conditioning: the original size, the crop's top left corner, the target size.
    size_ids = torch.tensor([[settings.height, settings.width, 0, 0, settings.height, settings.width]], device=device)
    text_embeds = _with_negative(pooled, negative_pooled, guided)
    return {
        "encoder_hidden_states": _with_negative(positive, negative, guided),
        "added_cond_kwargs": {"text_embeds": text_embeds, "time_ids": size_ids.to(positive.dtype).repeat(len(text_embeds), 1)},
    }


def _with_negative(positive: torch.Tensor, negative: torch.Tensor | None, guided: bool) -> torch.Tensor:
    return torch.cat([negative, positive]) if guided else positive


@dataclass(frozen=True)
class _Controls:
    """A job's ControlNets and, for each control, every view's image as a batch (twice over with
    guidance). Every view's controls are alike but for their images: the first view's settings serve."""

    controlnets: list
    conditions: list[torch.Tensor]
    settings: tuple  # the first view's ControlInputs
    union_modes: list[int] | None  # a Union ControlNet's mode for each control; None: one ControlNet each

    @classmethod
    def of(cls, pipeline, controlnets: list, request: TextureRequest, guided: bool) -> _Controls:
        settings, conditions = request.settings, []
        for index in range(len(request.views[0].controls)):
            images = [fit(view.controls[index].image, settings.width, settings.height) for view in request.views]
            condition = pipeline.control_image_processor.preprocess(images, height=settings.height, width=settings.width)
            condition = condition.to(execution_device(pipeline), pipeline.unet.dtype)
            conditions.append(torch.cat([condition, condition]) if guided else condition)
        union_modes = None
        if controlnets and is_union(controlnets):
            # The ordinary job's arguments check that the model has each control's mode.
            union_modes = control_arguments([request.view_request(0)], controlnets, False)["control_mode"]
        return cls(controlnets, conditions, request.views[0].controls, union_modes)

    def residuals(self, model_input, timestep, conditioning: dict, index: int, step_count: int) -> tuple:
        """The ControlNets' residuals for the UNet at step `index` (None, None: no control acts)."""
        # diffusers' rule for a control's step range (control_guidance_start / end)
        weights = [
            0.0 if index / step_count < control.start or (index + 1) / step_count > control.end else control.weight
            for control in self.settings
        ]
        if not any(weights):
            return None, None
        if self.union_modes is not None:
            union = self.controlnets[0]
            control_type = torch.zeros(len(model_input), union.config.num_control_type, dtype=model_input.dtype)
            control_type[:, self.union_modes] = 1
            return union(
                model_input, timestep, controlnet_cond=self.conditions, control_type=control_type.to(model_input.device),
                control_type_idx=self.union_modes, conditioning_scale=weights, return_dict=False, **conditioning,
            )
        down, middle = None, None
        for controlnet, condition, weight in zip(self.controlnets, self.conditions, weights):
            if not weight:
                continue
            control_down, control_middle = controlnet(
                model_input, timestep, controlnet_cond=condition, conditioning_scale=weight, return_dict=False,
                **conditioning,
            )
            down = control_down if down is None else [total + new for total, new in zip(down, control_down)]
            middle = control_middle if middle is None else middle + control_middle
        return down, middle


def _predict_noise(pipeline, controls: _Controls, request, latents, timestep, conditioning, index) -> torch.Tensor:
    """The UNet's noise prediction for every view at step `index`, its ControlNets' residuals added,
    with guidance."""
    guidance = request.settings.guidance_scale
    model_input = torch.cat([latents, latents]) if guidance > 1 else latents
    model_input = pipeline.scheduler.scale_model_input(model_input, timestep).to(pipeline.unet.dtype)
    down, middle = controls.residuals(model_input, timestep, conditioning, index, len(pipeline.scheduler.timesteps))
    noise = pipeline.unet(
        model_input, timestep, down_block_additional_residuals=down, mid_block_additional_residual=middle,
        return_dict=False, **conditioning,
    )[0].float()
    if guidance <= 1:
        return noise
    unconditional, conditional = noise.chunk(2)
    return unconditional + guidance * (conditional - unconditional)


def _decode(pipeline, latents: torch.Tensor) -> list[Image.Image]:
    """Each view decoded by the VAE, one at a time (a full-size decode holds large activations)."""
    vae = pipeline.vae
    # SDXL's VAE overflows in float16: its pipelines decode in float32 too.
    upcast = _is_sdxl(pipeline) and vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        vae.to(torch.float32)
    try:
        images = []
        for view in latents:
            decoded = vae.decode(view[None].to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
            images += pipeline.image_processor.postprocess(decoded, output_type="pil")
        return images
    finally:
        if upcast:
            vae.to(torch.float16)
