"""Request and response models of the HTTP API (pydantic v2)."""
from __future__ import annotations

from typing import Annotated, Literal

from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .images import decode_base64_image

SCHEDULERS = ("unipc", "euler_a", "euler", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "pndm", "lms", "heun")
SchedulerName = Literal["unipc", "euler_a", "euler", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "pndm", "lms", "heun"]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
# The most pixels (width x height) a job may ask for; the CLI sets it from --max-pixels.
MAX_PIXELS = 2048 * 2048

# Decoded while the request is validated, so a bad image is a 422 naming its field.
Base64Image = Annotated[
    Image.Image,
    BeforeValidator(decode_base64_image),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "description": "a PNG or JPEG file, base64"}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Control(_Strict):
    type: str = Field(description="the control type, e.g. depth, normal, openpose, lineart, canny, seg, tile")
    model: str | None = Field(
        None, description="a ControlNet name from /v1/models; null: the ControlNet this server serves for `type`"
    )
    image: Base64Image
    weight: float = Field(1.0, ge=0, le=2, description="controlnet_conditioning_scale")
    start: float = Field(0.0, ge=0, le=1, description="fraction of the steps where this control starts")
    end: float = Field(1.0, ge=0, le=1, description="fraction of the steps where this control ends")

    @model_validator(mode="after")
    def _start_before_end(self) -> Control:
        if self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be less than end ({self.end})")
        return self


class LoraWeight(_Strict):
    name: str = Field(max_length=200, description="a LoRA name from /v1/models (`loras[].name`)")
    weight: float = Field(1.0, ge=-4, le=4, description="how strongly the LoRA applies")


class JobRequest(_Strict):
    model: str | None = Field(
        None, max_length=200, description="a base model name from /v1/models; null: the server's default model"
    )
    loras: list[LoraWeight] = Field(default_factory=list, max_length=8, description="LoRAs applied to this job only")
    prompt: str = Field("", max_length=4000)
    negative_prompt: str = Field("", max_length=4000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="null picks a random seed")
    steps: int = Field(20, ge=1, le=150)
    guidance_scale: float = Field(7.5, ge=0, le=30)
    width: int = Field(512, ge=64, le=2048, multiple_of=8)
    height: int = Field(512, ge=64, le=2048, multiple_of=8)
    num_images: int = Field(1, ge=1, le=8)
    scheduler: SchedulerName = "unipc"
    controls: list[Control] = Field(default_factory=list, max_length=4)
    init_image: Base64Image | None = Field(None, description="img2img source image")
    strength: float = Field(0.75, ge=0, le=1, description="img2img denoising strength")
    guess_mode: bool = Field(
        False, description="ControlNet guess mode: the controls act without the prompt on the unconditional pass"
    )

    @model_validator(mode="after")
    def _at_most_max_pixels(self) -> JobRequest:
        # After validation, so a defaulted width or height counts too (field validators skip defaults).
        pixels = self.width * self.height
        if pixels <= MAX_PIXELS:
            return self
        # The error names the size the client sent (width when it sent only width, else height), not the
        # whole body as a ValueError raised here would.
        field = "width" if self.model_fields_set & {"width", "height"} == {"width"} else "height"
        message = f"{self.width}x{self.height} is {pixels} pixels; this server's maximum is {MAX_PIXELS} (width x height)"
        error = InitErrorDetails(
            type=PydanticCustomError("too_many_pixels", message), loc=(field,), input=getattr(self, field)
        )
        raise ValidationError.from_exception_data(type(self).__name__, [error])

    @model_validator(mode="after")
    def _img2img_runs_a_step(self) -> JobRequest:
        # img2img runs int(steps * strength) steps; diffusers fails on zero.
        if self.init_image is not None and int(self.steps * self.strength) < 1:
            raise ValueError(f"strength {self.strength} with {self.steps} steps leaves no step to run")
        return self


class JobCreated(BaseModel):
    id: str


class ErrorDetail(BaseModel):
    detail: str = Field(description="what went wrong and what to do, in one line")


class Progress(BaseModel):
    step: int
    total: int


class JobStatus(BaseModel):
    id: str
    state: JobState
    progress: Progress
    error: str | None
    images: list[str]
    parameters: dict
    created_at: str
    started_at: str | None
    finished_at: str | None
