"""Seamless tiling: every padded Conv2d of the given models pads circularly along the tiled axes
(x: left and right, y: top and bottom) and with zeros along the others, for one job.

LoRA-wrapped convolutions are covered too: peft's wrapper keeps the original Conv2d (its
`base_layer`) and adds Conv2d layers of its own, and every Conv2d found in the models is patched.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def seamless(models: Iterable[torch.nn.Module], tiling: str | None) -> Iterator[None]:
    """Within the block, the models' convolutions tile along `tiling` (None: unchanged); their own
    padding is back afterwards, also when the block raises."""
    if tiling is None:
        yield
        return
    convolutions = [convolution for model in models for convolution in _padded_convolutions(model)]
    try:
        for convolution in convolutions:
            convolution._conv_forward = _tiled_conv_forward(convolution, tiling)
        yield
    finally:
        for convolution in convolutions:
            convolution.__dict__.pop("_conv_forward", None)


def _padded_convolutions(model: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """The model's Conv2d layers that pad with zeros (those without padding have no border to wrap)."""
    return [
        module
        for module in model.modules()
        if isinstance(module, torch.nn.Conv2d)
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
        and any(module.padding)
    ]


def _tiled_conv_forward(convolution: torch.nn.Conv2d, tiling: str):
    """Conv2d._conv_forward with the padding done here: circular along the tiled axes, zeros
    along the others (padding mode `zeros`, that of every diffusers convolution)."""
    pad_y, pad_x = convolution.padding
    x_mode = "circular" if "x" in tiling else "constant"
    y_mode = "circular" if "y" in tiling else "constant"

    def forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        padded = F.pad(F.pad(input, (pad_x, pad_x, 0, 0), mode=x_mode), (0, 0, pad_y, pad_y), mode=y_mode)
        return F.conv2d(padded, weight, bias, convolution.stride, 0, convolution.dilation, convolution.groups)

    return forward
