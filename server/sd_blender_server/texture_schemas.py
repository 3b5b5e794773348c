"""The wire model of a synchronized texture job (POST /v1/texture-jobs), pydantic v2, bounded by the
server's RequestLimits like an ordinary job's (schemas.py), whose shared fields and control model
it reuses, so the two cannot drift apart."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from typing import Annotated, get_args

import numpy as np
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, model_validator

from .config import RequestLimits
from .schemas import errors_at, job_request_model, shared_settings_model
from .texture_request import LATENT_FACTOR, TextureRequest

# The fields a texture job shares with an ordinary job (same meaning, bounds and defaults).
SHARED_FIELDS = (
    "model", "loras", "prompt", "negative_prompt", "seed", "steps", "guidance_scale", "scheduler", "width", "height",
    "preview_every",
)
_TRIPLE_BYTES = 3 * 4  # u, v, c as little-endian float32
MAX_NEIGHBOURS = 4  # views one view's self-attention also reads
# The request's defaults are the engine's.
_DEFAULTS = {item.name: item.default for item in dataclasses.fields(TextureRequest)}


def decode_correspondence(value: object) -> np.ndarray:
    """A view's correspondence (base64 of little-endian float32 u, v, c triples) as a (pixels, 3)
    array, checked: c in [0, 1]; u, v finite and in [0, 1] where c > 0 (set to 0 elsewhere, unused)."""
    if not isinstance(value, str):
        raise ValueError("must be a base64 string of float32 (u, v, c) triples")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    if len(data) % _TRIPLE_BYTES:
        raise ValueError(f"is {len(data)} bytes, not a whole number of float32 (u, v, c) triples (12 bytes each)")
    triples = np.frombuffer(data, dtype="<f4").reshape(-1, 3).astype(np.float32)
    cosines = triples[:, 2]
    if not np.all((cosines >= 0) & (cosines <= 1)):  # NaN fails too
        raise ValueError("has a c (cosine) outside [0, 1] or not a number")
    seen = cosines > 0
    if not np.all((triples[seen, :2] >= 0) & (triples[seen, :2] <= 1)):
        raise ValueError("has u or v outside [0, 1] (or not a number) where c > 0")
    triples[~seen, :2] = 0
    return triples


def texture_request_model(limits: RequestLimits) -> type[BaseModel]:
    """The model of a POST /v1/texture-jobs body bounded by `limits`."""
    job_request = job_request_model(limits)
    (control,) = get_args(job_request.model_fields["controls"].annotation)
    largest_view = limits.max_pixels // LATENT_FACTOR**2 * _TRIPLE_BYTES
    correspondence_array = Annotated[
        np.ndarray,
        BeforeValidator(decode_correspondence),
        WithJsonSchema({
            "type": "string",
            "contentEncoding": "base64",
            "maxLength": 4 * math.ceil(largest_view / 3),
            "description": (
                "base64 of a little-endian float32 array of shape (height/8, width/8, 3), row 0 the view's top: "
                "per latent pixel u, v (the texture coordinates seen there, in [0, 1], v = 0 at the texture's "
                "bottom) and c (the cosine between the surface normal and the direction to the camera, in "
                "[0, 1]; 0 where the object is not seen or hidden)"
            ),
        }),
    ]

    class View(BaseModel):
        model_config = job_request.model_config
        controls: list[control] = Field(
            default_factory=list, max_length=limits.max_controls,
            description="as in POST /v1/jobs; every view has the same controls, only their images differ",
        )
        correspondence: correspondence_array
        neighbours: list[int] = Field(
            default_factory=list, max_length=MAX_NEIGHBOURS,
            description=(
                "indexes of other views this view's self-attention also reads (e.g. the views beside it), "
                "so that views sharing little of the texture still agree in style"
            ),
        )

    class TextureJobRequest(shared_settings_model(job_request, "TextureJobSettings", SHARED_FIELDS)):
        texture_size: int = Field(
            _DEFAULTS["texture_size"], ge=limits.texture_size.min, le=limits.texture_size.max,
            description="the side of the square latent texture the views are fused in, in texels",
        )
        exponent_start: float = Field(
            _DEFAULTS["exponent_start"], ge=0, le=32, description="the exponent p of the fusion's weights cos^p at the first step"
        )
        exponent_end: float = Field(_DEFAULTS["exponent_end"], ge=0, le=32, description="p at the last step (it rises linearly)")
        views: list[View] = Field(min_length=1, max_length=limits.max_views, description="one image each, in this order")

        @model_validator(mode="after")
        def _neighbours_are_other_views(self) -> TextureJobRequest:
            errors = []
            for index, view in enumerate(self.views):
                others = set(range(len(self.views))) - {index}
                if set(view.neighbours) <= others and len(set(view.neighbours)) == len(view.neighbours):
                    continue
                message = f"must be distinct indexes of other views (0 to {len(self.views) - 1}, not {index})"
                errors.append((("views", index, "neighbours"), "neighbours", message))
            if errors:
                raise errors_at(self, errors)
            return self

        @model_validator(mode="after")
        def _correspondences_fit_the_views(self) -> TextureJobRequest:
            rows, columns = self.height // LATENT_FACTOR, self.width // LATENT_FACTOR
            errors = []
            for index, view in enumerate(self.views):
                if len(view.correspondence) == rows * columns:
                    view.correspondence = view.correspondence.reshape(rows, columns, 3)
                    continue
                message = (
                    f"is {len(view.correspondence) * _TRIPLE_BYTES} bytes; a {self.width}x{self.height} view needs "
                    f"float32 (u, v, c) of shape ({rows}, {columns}, 3): {rows * columns * _TRIPLE_BYTES} bytes"
                )
                errors.append((("views", index, "correspondence"), "correspondence_size", message))
            if errors:
                raise errors_at(self, errors)
            return self

    return TextureJobRequest


# The model of a server with the default limits (what clients can check a request against offline).
TextureJobRequest = texture_request_model(RequestLimits())
