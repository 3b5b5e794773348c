"""What the engine is asked to generate in a synchronized texture job: several views of one object,
each with its controls and its correspondence to the texture, denoised together so that they agree
(synchronized.py). Plain frozen dataclasses and numpy: no HTTP, no torch."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .request import GenerationRequest, Problem

if TYPE_CHECKING:
    from .catalog import Catalog

# The latent image is the view downsampled by 8 (SD's VAE); correspondences are given per latent pixel.
LATENT_FACTOR = 8


@dataclass(frozen=True)
class TextureView:
    controls: tuple  # ControlInput, the same ControlNets, weights and step ranges in every view
    # float32 (height/8, width/8, 3), row 0 the view's top; per latent pixel: u, v (the texture's
    # coordinates, v = 0 at its bottom row) and c, the cosine between the surface normal and the
    # direction to the camera (0 where the view does not see the object).
    correspondence: np.ndarray
    # The other views (indexes) this view's self-attention also reads, so views that share little
    # texture still agree in style.
    neighbours: tuple[int, ...] = ()


@dataclass(frozen=True)
class TextureRequest:
    # The prompt, seed, steps, guidance, scheduler, view size, model and LoRAs every view shares
    # (its own controls are left empty: each view has its own).
    settings: GenerationRequest
    views: tuple[TextureView, ...]
    texture_size: int = 128  # the side of the square latent texture the views are fused in
    exponent_start: float = 1.0  # cos^p weights: p rises linearly from start to end over the steps
    exponent_end: float = 6.0

    @property
    def steps(self) -> int:
        return self.settings.steps

    def with_seed(self) -> TextureRequest:
        """The request with its seed chosen (see GenerationRequest.with_seed)."""
        return dataclasses.replace(self, settings=self.settings.with_seed())

    def view_request(self, index: int) -> GenerationRequest:
        """View `index` as an ordinary job: the shared settings with the view's controls."""
        return dataclasses.replace(self.settings, controls=self.views[index].controls)


def texture_problems(catalog: Catalog, request: TextureRequest) -> list[Problem]:
    """What this server cannot run in a texture job, as field paths of its body; [] when it can."""
    first_view = request.view_request(0)
    return [
        *(_in_first_view(problem) for problem in catalog.problems(first_view)),
        *_controls_unlike_the_first(request.views),
    ]


def _in_first_view(problem: Problem) -> Problem:
    """A problem of an ordinary job's controls moved to the first view's controls."""
    if problem.path[:1] != ("controls",):
        return problem
    return Problem(("views", 0, *problem.path), problem.message)


def _controls_unlike_the_first(views: tuple[TextureView, ...]) -> list[Problem]:
    message = (
        "every view must have the same controls (type, model, weight, start, end, in the same order) as view 0; "
        "only their images differ"
    )
    first = _control_setup(views[0])
    return [
        Problem(("views", index, "controls"), message)
        for index, view in enumerate(views[1:], start=1)
        if _control_setup(view) != first
    ]


def _control_setup(view: TextureView) -> list[tuple]:
    return [(control.type, control.model, control.weight, control.start, control.end) for control in view.controls]


def texture_parameters(catalog: Catalog, request: TextureRequest) -> dict:
    """What a texture job will run with: an ordinary job's parameters (view 0's controls, which every
    view shares) with one image per view, all from one seed, and the fusion's settings."""
    count = len(request.views)
    parameters = catalog.parameters(request.view_request(0))
    return {
        **parameters,
        "num_images": count,
        "seeds": [parameters["seed"]] * count,
        "texture": {
            "views": count,
            "texture_size": request.texture_size,
            "exponent_start": request.exponent_start,
            "exponent_end": request.exponent_end,
            "neighbours": [list(view.neighbours) for view in request.views],
        },
    }
