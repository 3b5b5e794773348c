"""ControlNets that do not run outside their step window.

diffusers' ControlNet pipelines call every ControlNet at every step, with its conditioning scale
times 0 outside the control's [start, end] window (`controlnet_keep`), and add the zero residuals
that come out. `skip_when_unscaled` makes a loaded ControlNet give those zeros without running
when its scale is zero, so a control that acts on half the steps costs half the ControlNet time and
the images stay the stock pipeline's.

The zeros have exactly the shapes the forward would give, worked out from the model's config and
the input's size (see `residual_shapes`), in the input's dtype, on its device. The forward is
replaced on the model instance only: LoRAs, attention processors (cross_frame.py) and patched
convolutions (tiling.py) act inside the real forward (`forward_in_window` on the instance), which
runs whenever the scale is not zero.

`compile_in_window` compiles that real forward only (--compile): the window's test stays outside
the graph, which would otherwise hold a branch for each side of the window and a graph for each
conditioning scale, compiled anew whenever a control's weight changes.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

import torch
from diffusers import ControlNetModel, ControlNetUnionModel
from diffusers.models.controlnets.controlnet import ControlNetOutput


def skip_when_unscaled(controlnet: ControlNetModel | ControlNetUnionModel) -> ControlNetModel | ControlNetUnionModel:
    """`controlnet`, its forward returning zero residuals without running when its conditioning
    scale makes them zero (once per model: a second call changes nothing). A Union ControlNet's
    forward also takes the control types of a guess-mode batch (see _one_row_per_sample)."""
    if getattr(controlnet.forward, "skips_when_unscaled", False):
        return controlnet
    controlnet.forward_in_window = controlnet.forward
    signature = inspect.signature(controlnet.forward)

    @functools.wraps(controlnet.forward)
    def forward(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        options = call.arguments
        if _scales_to_zero(controlnet, options):
            return _zero_residuals(controlnet.config, options["sample"], options["return_dict"])
        if isinstance(controlnet, ControlNetUnionModel):
            options["control_type"] = _one_row_per_sample(options["control_type"], options["sample"])
        return controlnet.forward_in_window(**options)  # every parameter by name: ControlNets take no *args

    forward.skips_when_unscaled = True
    controlnet.forward = forward
    return controlnet


def compile_in_window(controlnet: ControlNetModel | ControlNetUnionModel, mode: str) -> None:
    """torch.compile (static shapes) of the ControlNet's real forward, within skip_when_unscaled's
    window (installed here when it is not yet). Its conditioning scales go in as tensors, so one
    graph serves every weight (a number is a constant of the graph: each value would compile anew)."""
    skip_when_unscaled(controlnet)
    compiled = torch.compile(controlnet.forward_in_window, mode=mode, dynamic=False)
    union = isinstance(controlnet, ControlNetUnionModel)

    def forward_in_window(conditioning_scale, **options):
        scale = _scale_tensors(conditioning_scale, options["sample"].device)
        if union and isinstance(scale, torch.Tensor):  # a Union takes one number, else a list
            scale = [scale] * len(options["controlnet_cond"])
        return compiled(conditioning_scale=scale, **options)

    controlnet.forward_in_window = forward_in_window


def _scale_tensors(scale, device: torch.device):
    """A conditioning scale (a number, a tensor, a list of either) with its numbers as float32
    tensors on `device`."""
    if isinstance(scale, Sequence):
        return [_scale_tensors(item, device) for item in scale]
    return scale if isinstance(scale, torch.Tensor) else torch.tensor(float(scale), device=device)


def _zero_residuals(config, sample: torch.Tensor, return_dict: bool):
    shapes = residual_shapes(config, sample.shape)
    down = [sample.new_zeros(shape) for shape in shapes[:-1]]
    middle = sample.new_zeros(shapes[-1])
    if return_dict:
        return ControlNetOutput(down_block_res_samples=down, mid_block_res_sample=middle)
    return down, middle


def _one_row_per_sample(control_type: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """A Union ControlNet's control types (one row per sample, every row alike) for the samples it
    is given. diffusers' Union pipelines (0.42) repeat them for both halves of classifier-free
    guidance even in guess mode, where the ControlNet runs on the conditional half only, and the
    forward then fails on the mismatch."""
    return control_type[: len(sample)] if len(control_type) > len(sample) else control_type


def _scales_to_zero(controlnet, options: dict) -> bool:
    """Whether the forward's residuals are all zeros: its conditioning scale is. A Union ControlNet
    scales its residuals by the first control's scale only when it runs one control (or is one of
    a MultiControlNetUnionModel's); with several controls at once it scales their conditions, and
    with every scale zero it still gives the residuals of the latents alone, as stock does."""
    scale = options["conditioning_scale"]
    if not isinstance(controlnet, ControlNetUnionModel):
        return is_zero(scale)
    if not (options["from_multi"] or len(options["control_type_idx"]) == 1):
        return False
    return is_zero(scale[0] if isinstance(scale, Sequence) else scale)


def is_zero(scale) -> bool:
    """Whether a conditioning scale (a number, a tensor, a list of either) is zero throughout."""
    if isinstance(scale, torch.Tensor):
        return not bool(scale.any())
    if isinstance(scale, Sequence):
        return all(is_zero(item) for item in scale)
    return scale == 0


def residual_shapes(config, sample_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The shapes of a ControlNet's residuals for a latent input of `sample_shape` (batch, channels,
    height, width): one for the input convolution, one for each resnet of each down block, one for
    each block's downsampler (all but the last block's), then the middle block's. Channels follow
    `block_out_channels`; each downsampler is a 3x3 convolution of stride 2 with
    `downsample_padding` (0: diffusers pads one row and column at the bottom right itself). Pooled
    conditions (`global_pool_conditions`) are 1x1."""
    batch, _, height, width = sample_shape
    channels = config.block_out_channels
    sizes = [(height, width)]
    for _ in channels[1:]:
        sizes.append(tuple(_downsampled(side, config.downsample_padding) for side in sizes[-1]))
    shapes = [(channels[0], *sizes[0])]
    for block, block_channels in enumerate(channels):
        shapes += [(block_channels, *sizes[block])] * config.layers_per_block
        if block < len(channels) - 1:
            shapes.append((block_channels, *sizes[block + 1]))
    shapes.append((channels[-1], *sizes[-1]))
    if config.global_pool_conditions:
        shapes = [(block_channels, 1, 1) for block_channels, _, _ in shapes]
    return [(batch, *shape) for shape in shapes]


def _downsampled(side: int, padding: int) -> int:
    if padding == 0:
        return (side + 1 - 3) // 2 + 1
    return (side + 2 * padding - 3) // 2 + 1
