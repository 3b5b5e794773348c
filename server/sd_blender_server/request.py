"""What the engine is asked to generate: plain frozen dataclasses, no HTTP. The HTTP layer
(api.py) converts its validated wire model into these; any other driver builds them directly."""
from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass

from PIL import Image

# Where a problem in a request is: field names and list indexes, e.g. ("controls", 0, "type").
FieldPath = tuple[str | int, ...]
# The axes along which an image may tile seamlessly (GenerationRequest.tiling).
TILING_AXES = ("x", "y", "xy")


@dataclass(frozen=True)
class Problem:
    """What the server cannot run in a request, and where."""

    path: FieldPath
    message: str


@dataclass(frozen=True)
class ControlInput:
    type: str
    image: Image.Image
    model: str | None = None  # a ControlNet's catalog name; None: the one serving `type`
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class LoraInput:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None  # None: a random seed is chosen (with_seed)
    steps: int = 20
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    num_images: int = 1
    scheduler: str = "unipc"
    controls: tuple[ControlInput, ...] = ()
    init_image: Image.Image | None = None  # img2img source
    mask_image: Image.Image | None = None  # inpainting mask of init_image, mode L: white repaints, black keeps
    strength: float = 0.75
    guess_mode: bool = False
    model: str | None = None  # a base model's catalog name; None: the default
    loras: tuple[LoraInput, ...] = ()
    tiling: str | None = None  # one of TILING_AXES: seamless along it; None: not tiled
    preview_every: int = 3  # steps between live previews (previews.py); 0: none

    def with_seed(self) -> GenerationRequest:
        """The request with its seed chosen: a null seed becomes a random one in [0, 2**32)."""
        if self.seed is not None:
            return self
        return dataclasses.replace(self, seed=secrets.randbelow(2**32))
