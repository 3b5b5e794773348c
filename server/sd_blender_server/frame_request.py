"""What the engine is asked to generate in a frame job: a chunk of animation frames run as one batch,
each an ordinary job with its own images, and optionally an anchor frame whose keys and values every
frame's self-attention also reads (cross_frame.py). Plain frozen dataclasses: no HTTP, no torch."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from .request import GenerationRequest, Problem

if TYPE_CHECKING:
    from .catalog import Catalog


@dataclass(frozen=True)
class FrameRequest:
    # Every frame as an ordinary job: the same settings, controls and seed; its own control images,
    # init image and mask.
    frames: tuple[GenerationRequest, ...]
    # The anchor frame as one too (never masked), or None: no cross-frame attention.
    anchor: GenerationRequest | None = None

    @property
    def steps(self) -> int:
        return self.frames[0].steps

    def with_seed(self) -> FrameRequest:
        """The request with its seed chosen: one seed for every frame and the anchor."""
        seed = self.frames[0].with_seed().seed

        def seeded(request: GenerationRequest) -> GenerationRequest:
            return dataclasses.replace(request, seed=seed)

        return FrameRequest(tuple(map(seeded, self.frames)), self.anchor and seeded(self.anchor))

    def batch(self) -> list[GenerationRequest]:
        """What runs as one batch: the anchor first, if any, then the frames. When the frames are
        inpainted the anchor is too, with an all-black mask: it keeps its whole image."""
        if self.anchor is None:
            return list(self.frames)
        anchor = self.anchor
        if self.frames[0].mask_image is not None:
            anchor = dataclasses.replace(anchor, mask_image=Image.new("L", anchor.init_image.size, 0))
        return [anchor, *self.frames]


def frame_problems(catalog: Catalog, request: FrameRequest) -> list[Problem]:
    """What this server cannot run in a frame job (its frames share models and controls); [] when it can."""
    return catalog.problems(request.frames[0])


def frame_parameters(catalog: Catalog, request: FrameRequest) -> dict:
    """What a frame job will run with: an ordinary job's parameters with one image per frame, all
    from one seed, and the frame count and whether an anchor was used."""
    count = len(request.frames)
    parameters = catalog.parameters(request.frames[0])
    return {
        **parameters,
        "num_images": count,
        "seeds": [parameters["seed"]] * count,
        "frames": {"count": count, "anchor": request.anchor is not None},
    }
