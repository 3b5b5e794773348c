"""Sequential texturing's masks (docs/texturing.md): each new view repaints only what the views
before it missed (generate) or saw at a much worse angle than it does (refine), and keeps the
rest; masks are grown and feathered so the regions join without a visible border."""
from dataclasses import dataclass

import numpy as np

# A texel is refined when the best view so far saw it at less than this fraction of the cosine
# the new view sees it at.
REFINE_RATIO = 0.6
# How far masks grow and then fade, as a fraction of the view's shorter side (8 and 8 px at 512).
GROW_FRACTION = 1 / 64
FEATHER_FRACTION = 1 / 64


@dataclass
class ViewMasks:
    generate: np.ndarray  # (H, W) bool, grown: nothing seen there yet
    refine: np.ndarray  # (H, W) bool, grown: seen, but much worse than from this view
    blend: np.ndarray  # (H, W) 0–1: how much of the new image replaces the current texture

    def image(self):
        """The masks as one 8-bit picture: white generate, grey refine, black keep."""
        return np.where(self.generate, 255, np.where(self.refine, 128, 0)).astype(np.uint8)


def view_masks(visible, cosines, best_so_far):
    """Masks of one view: per pixel whether it shows the textured surface (`visible`), the
    cosine it sees it at, and the best cosine any earlier view saw that spot at (0: unseen)."""
    short_side = min(visible.shape)
    grow = max(int(round(GROW_FRACTION * short_side)), 1)
    feather = max(int(round(FEATHER_FRACTION * short_side)), 1)
    generate = visible & (best_so_far <= 0)
    refine = visible & ~generate & (best_so_far < REFINE_RATIO * cosines)
    generate = grown(generate, grow) & visible
    refine = grown(refine, grow) & visible & ~generate
    blend = feathered(generate | refine, feather)
    return ViewMasks(generate, refine, blend)


def grown(mask, pixels):
    """The mask grown by `pixels` in every direction (8-neighbour steps)."""
    out = mask.copy()
    for _ in range(pixels):
        step = out.copy()
        step[1:] |= out[:-1]
        step[:-1] |= out[1:]
        step[:, 1:] |= out[:, :-1]
        step[:, :-1] |= out[:, 1:]
        step[1:, 1:] |= out[:-1, :-1]
        step[:-1, :-1] |= out[1:, 1:]
        step[1:, :-1] |= out[:-1, 1:]
        step[:-1, 1:] |= out[1:, :-1]
        out = step
    return out


def feathered(mask, pixels):
    """1 inside the mask, fading to 0 over `pixels` outside it (repeated 3 × 3 box blurs of the
    mask grown by `pixels`, kept at 1 inside)."""
    soft = grown(mask, pixels).astype(np.float32)
    for _ in range(pixels):
        padded = np.pad(soft, 1, mode="edge")
        soft = sum(padded[dy:dy + soft.shape[0], dx:dx + soft.shape[1]] for dy in range(3) for dx in range(3)) / 9.0
    return np.where(mask, 1.0, soft)


def composite(current, generated, blend):
    """The new view image: the generated one where `blend` says, the current texture elsewhere."""
    return current * (1.0 - blend[..., None]) + generated * blend[..., None]
