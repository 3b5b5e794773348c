"""Cross-frame attention: the frames of a batch also attend to an anchor frame's keys and values in
their self-attention layers, so that the frames of an animation keep the anchor's style and identity
(Text2Video-Zero's cross-frame attention, with the anchor computed in the same batch)."""
from __future__ import annotations

import contextlib

import torch
from diffusers.models.attention_processor import AttnProcessor2_0


class CrossFrameAttention(AttnProcessor2_0):
    """Self-attention over each row's own tokens and its group's anchor's. The batch is groups of
    `group_size` rows, the anchor first in each: one group per classifier-free guidance half (one in
    all where a ControlNet runs on the conditional half only, as in guess mode). The anchor reads its
    own tokens twice over, which is the same as reading them once. The layer's own projections
    (to_q, to_k, to_v, with any LoRA on them) make the queries, keys and values."""

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        anchors = hidden_states[:: self.group_size].repeat_interleave(self.group_size, dim=0)
        return super().__call__(attn, hidden_states, torch.cat([hidden_states, anchors], dim=1), attention_mask, temb)


@contextlib.contextmanager
def self_attention_processor(models: list, processor):
    """`processor` on every self-attention layer (attn1) of `models` (a UNet, ControlNets) while the
    block runs; each model's own processors, exactly, after it, whatever happens."""
    originals = [model.attn_processors for model in models]
    try:
        for model, original in zip(models, originals):
            # set_attn_processor empties the dict it is given: each call gets its own.
            model.set_attn_processor({
                name: processor if name.endswith("attn1.processor") else layer for name, layer in original.items()
            })
        yield
    finally:
        for model, original in zip(models, originals):
            model.set_attn_processor(dict(original))


def cross_frame_attention(models: list, group_size: int):
    """CrossFrameAttention on the self-attention layers of `models` while the block runs."""
    return self_attention_processor(models, CrossFrameAttention(group_size))
