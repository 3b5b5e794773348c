"""Request and response models of the HTTP API (pydantic v2). The request's bounds come from the
server's RequestLimits, so the OpenAPI schema shows the limits the running server enforces."""
from __future__ import annotations

from dataclasses import fields
from functools import partial
from typing import Annotated, Literal

from PIL import Image
from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, create_model, model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .config import CONTROL_TYPES, RequestLimits
from .images import decode_base64_image, decode_base64_mask
from .jobs import JOB_STATES
from .request import TILING_AXES, ControlInput, GenerationRequest, LoraInput
from .schedulers import SCHEDULER_NAMES
from .timings import timed_decoding

JobState = Literal[JOB_STATES]
SchedulerName = Literal[SCHEDULER_NAMES]
TilingAxes = Literal[TILING_AXES]


def _defaults_of(dataclass_type) -> dict:
    return {item.name: item.default for item in fields(dataclass_type)}


# The request's defaults are the engine's.
_DEFAULTS = _defaults_of(GenerationRequest)
_CONTROL_DEFAULTS = _defaults_of(ControlInput)
_LORA_DEFAULTS = _defaults_of(LoraInput)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def _field_error(model: BaseModel, field: str, error_type: str, message: str) -> ValidationError:
    """A validation error located at `field` (a ValueError raised by a model validator would name the
    whole body)."""
    error = InitErrorDetails(type=PydanticCustomError(error_type, message), loc=(field,), input=getattr(model, field))
    return ValidationError.from_exception_data(type(model).__name__, [error])


def _base64_image(decode, limits: RequestLimits, description: str):
    """An image field decoded while the request is validated, so a bad image is a 422 naming its field."""
    return Annotated[
        Image.Image,
        BeforeValidator(partial(timed_decoding(decode), max_pixels=limits.max_input_pixels)),
        WithJsonSchema({"type": "string", "contentEncoding": "base64", "description": description}),
    ]


def errors_at(model: BaseModel, errors: list[tuple[tuple, str, str]]) -> ValidationError:
    """A validation error for each (field path, error type, message): a ValueError raised by a model
    validator would name the whole body."""
    details = [
        InitErrorDetails(type=PydanticCustomError(kind, message), loc=path, input=None) for path, kind, message in errors
    ]
    return ValidationError.from_exception_data(type(model).__name__, details)


def input_image_types(limits: RequestLimits) -> tuple[type, type]:
    """The wire types of an input image and of an inpainting mask."""
    files = f"a PNG or JPEG file, base64, of at most {limits.max_input_pixels} pixels"
    mask = f"{files}: black and white, grayscale, RGB or RGBA (read as grayscale, alpha ignored)"
    return _base64_image(decode_base64_image, limits, files), _base64_image(decode_base64_mask, limits, mask)


class MaskFitsInitImage(_Strict):
    """A model with `init_image` and `mask_image`: a mask needs an init image of its size."""

    @model_validator(mode="after")
    def _mask_fits_init_image(self) -> MaskFitsInitImage:
        if self.mask_image is None:
            return self
        if self.init_image is None:
            raise _field_error(self, "mask_image", "mask_without_init_image", "needs init_image, the image it masks")
        if self.mask_image.size != self.init_image.size:
            mask, image = (f"{item.width}x{item.height}" for item in (self.mask_image, self.init_image))
            message = f"is {mask} but init_image is {image}: a mask must be the size of its image"
            raise _field_error(self, "mask_image", "mask_size", message)
        return self


def no_step_left(steps: int, strength: float) -> str | None:
    """Why img2img cannot run with these settings (it runs int(steps * strength) steps; diffusers
    fails on zero); None when it can."""
    if int(steps * strength) >= 1:
        return None
    return f"strength {strength} with {steps} steps leaves no step to run"


def control_models(limits: RequestLimits) -> tuple[type[BaseModel], type[BaseModel]]:
    """The models of a job's control without its image (a frame job's: each frame has the images)
    and with it."""
    base64_image, _ = input_image_types(limits)

    class ControlSettings(_Strict):
        type: str = Field(description=f"the control type, e.g. {', '.join(CONTROL_TYPES)} (see /v1/models)")
        model: str | None = Field(
            _CONTROL_DEFAULTS["model"],
            description="a ControlNet name from /v1/models; null: the ControlNet this server serves for `type`",
        )
        weight: float = Field(
            _CONTROL_DEFAULTS["weight"], ge=limits.control_weight.min, le=limits.control_weight.max,
            description="controlnet_conditioning_scale",
        )
        start: float = Field(
            _CONTROL_DEFAULTS["start"], ge=0, le=1, description="fraction of the steps where this control starts"
        )
        end: float = Field(_CONTROL_DEFAULTS["end"], ge=0, le=1, description="fraction of the steps where this control ends")

        @model_validator(mode="after")
        def _start_before_end(self) -> ControlSettings:
            if self.start >= self.end:
                raise ValueError(f"start ({self.start}) must be less than end ({self.end})")
            return self

    class Control(ControlSettings):
        image: base64_image

    return ControlSettings, Control


def shared_settings_model(job_request: type[BaseModel], name: str, fields: tuple[str, ...]) -> type[BaseModel]:
    """A model with these fields of an ordinary job (same meaning, bounds and defaults), which follow
    the rules they follow there together (width x height against --max-pixels): the base of a
    request of another kind."""

    def shared_fields_as_a_job(model: BaseModel) -> BaseModel:
        job_request.model_validate({field: getattr(model, field) for field in model.model_fields_set & set(fields)})
        return model

    return create_model(
        name,
        __config__=job_request.model_config,
        __validators__={"_shared_fields_as_a_job": model_validator(mode="after")(shared_fields_as_a_job)},
        **{field: (job_request.model_fields[field].annotation, job_request.model_fields[field]) for field in fields},
    )


def job_request_model(limits: RequestLimits) -> type[BaseModel]:
    """The model of a POST /v1/jobs body (and of its controls and LoRAs) bounded by `limits`."""
    base64_image, base64_mask = input_image_types(limits)
    _, Control = control_models(limits)

    class LoraWeight(_Strict):
        name: str = Field(max_length=200, description="a LoRA name from /v1/models (`loras[].name`)")
        weight: float = Field(
            _LORA_DEFAULTS["weight"], ge=limits.lora_weight.min, le=limits.lora_weight.max,
            description="how strongly the LoRA applies",
        )

    pixels = f"width x height at most {limits.max_pixels} (this server's --max-pixels), defaults included"

    class JobRequest(MaskFitsInitImage):
        model: str | None = Field(
            _DEFAULTS["model"], max_length=200,
            description="a base model name from /v1/models; null: the server's default model",
        )
        loras: list[LoraWeight] = Field(
            default_factory=list, max_length=limits.max_loras, description="LoRAs applied to this job only"
        )
        prompt: str = Field(_DEFAULTS["prompt"], max_length=limits.prompt_max_length)
        negative_prompt: str = Field(_DEFAULTS["negative_prompt"], max_length=limits.prompt_max_length)
        seed: int | None = Field(_DEFAULTS["seed"], ge=0, le=2**32 - 1, description="null picks a random seed")
        steps: int = Field(_DEFAULTS["steps"], ge=limits.steps.min, le=limits.steps.max)
        guidance_scale: float = Field(
            _DEFAULTS["guidance_scale"], ge=limits.guidance_scale.min, le=limits.guidance_scale.max
        )
        width: int = Field(
            _DEFAULTS["width"], ge=limits.width.min, le=limits.width.max, multiple_of=limits.width.multiple_of,
            description=pixels,
        )
        height: int = Field(
            _DEFAULTS["height"], ge=limits.height.min, le=limits.height.max, multiple_of=limits.height.multiple_of,
            description=pixels,
        )
        num_images: int = Field(_DEFAULTS["num_images"], ge=limits.num_images.min, le=limits.num_images.max)
        scheduler: SchedulerName = _DEFAULTS["scheduler"]
        controls: list[Control] = Field(default_factory=list, max_length=limits.max_controls)
        init_image: base64_image | None = Field(_DEFAULTS["init_image"], description="img2img source image")
        mask_image: base64_mask | None = Field(
            _DEFAULTS["mask_image"],
            description=(
                "inpainting mask of init_image, the same size: white is repainted, black kept (init_image's "
                "own pixels), gray blends them; needs init_image"
            ),
        )
        strength: float = Field(
            _DEFAULTS["strength"], ge=limits.strength.min, le=limits.strength.max,
            description="img2img and inpainting denoising strength",
        )
        guess_mode: bool = Field(
            _DEFAULTS["guess_mode"],
            description="ControlNet guess mode: the controls act without the prompt on the unconditional pass",
        )
        preview_every: int = Field(
            _DEFAULTS["preview_every"], ge=0, le=limits.steps.max,
            description=(
                "a live preview (SSE `preview` event, GET /v1/jobs/{id}/preview) every this many steps, not "
                "after the last; 0: none"
            ),
        )
        tiling: TilingAxes | None = Field(
            _DEFAULTS["tiling"],
            description="seamless tiling: the image wraps around left-right (x), top-bottom (y) or both; null: none",
        )

        @model_validator(mode="after")
        def _at_most_max_pixels(self) -> JobRequest:
            # After validation, so a defaulted width or height counts too (field validators skip defaults).
            pixels = self.width * self.height
            if pixels <= limits.max_pixels:
                return self
            # The error names the size the client sent (width when it sent only width, else height), not
            # the whole body as a ValueError raised here would.
            field = "width" if self.model_fields_set & {"width", "height"} == {"width"} else "height"
            message = (
                f"{self.width}x{self.height} is {pixels} pixels; this server's maximum is {limits.max_pixels} "
                "(width x height)"
            )
            raise _field_error(self, field, "too_many_pixels", message)

        @model_validator(mode="after")
        def _img2img_runs_a_step(self) -> JobRequest:
            reason = no_step_left(self.steps, self.strength)
            if self.init_image is not None and reason:
                raise ValueError(reason)
            return self

    return JobRequest


# The request model of a server with the default limits (what clients can check a request against
# offline); a running server validates with job_request_model(its limits).
JobRequest = job_request_model(RequestLimits())


class JobCreated(BaseModel):
    id: str


class ErrorDetail(BaseModel):
    detail: str = Field(description="what went wrong and what to do, in one line")


class Progress(BaseModel):
    step: int
    total: int


class Batch(BaseModel):
    jobs: int = Field(description="the jobs that ran as one pipeline call, this one included (1: it ran alone)")
    images: int = Field(description="their images in all (at most the server's --max-batch when jobs > 1)")


class Timings(BaseModel):
    """Where the job's time went, in milliseconds, measured by the server; null: not reached yet."""

    parsing: float = Field(description="reading the request body and parsing its JSON")
    validation: float = Field(description="checking the request: schema, names against the catalog, parameters")
    decoding: float = Field(description="decoding its base64 input images (control, init and mask images)")
    queued: float | None = Field(description="waiting in the queue")
    generation: float | None = Field(description="the engine: loading what it needs, preparing images, the model")
    encoding: float | None = Field(description="encoding its images as PNG with their generation metadata")
    total: float | None = Field(description="from the request's arrival to the job's end, all of the above included")
    answer: float | None = Field(
        None, description="answering the submission once the job was queued (the 202's last byte handed to the "
        "HTTP server); it overlaps the queue"
    )
    download: float | None = Field(
        None, description="sending the job's images: its image requests' time in the server, summed; null: none yet"
    )


class JobStatus(BaseModel):
    id: str
    state: JobState
    progress: Progress
    error: str | None
    images: list[str]
    preview_step: int | None = Field(description="the step of the latest live preview; null: none yet")
    parameters: dict
    created_at: str
    started_at: str | None
    finished_at: str | None
    batch: Batch | None = Field(
        description="once it runs: the pipeline call it shares with other queued jobs alike (batching); null while queued"
    )
    timings: Timings
    replica: str | None = Field(
        None, description="the Ray Serve replica the job was sent to (as /health lists them); null for one process"
    )


class NumberRange(BaseModel):
    min: float
    max: float


class CountRange(BaseModel):
    min: int
    max: int


class SizeRange(BaseModel):
    min: int
    max: int
    multiple_of: int


class AtMost(BaseModel):
    max: int


class Limits(BaseModel):
    """What this server accepts: its request bounds, queue and body limits (GET /v1/limits)."""

    max_pixels: int = Field(description="the most width x height a job may ask for (--max-pixels)")
    width: SizeRange
    height: SizeRange
    steps: CountRange
    num_images: CountRange
    guidance_scale: NumberRange
    strength: NumberRange
    prompt_max_length: int = Field(description="the most characters in prompt and negative_prompt")
    controls: AtMost = Field(description="the most controls a job may have")
    control_weight: NumberRange
    loras: AtMost = Field(description="the most LoRAs a job may apply")
    lora_weight: NumberRange
    views: AtMost = Field(description="the most views a synchronized texture job may have (--max-views)")
    frames: AtMost = Field(description="the most frames a frame job may have, its anchor not counted (--max-frames)")
    texture_size: CountRange = Field(description="the side of a texture job's latent texture, in texels")
    schedulers: list[str]
    max_queue: int = Field(description="jobs that may wait; past it POST /v1/jobs answers 429 (--max-queue)")
    job_timeout_s: float | None = Field(description="seconds a job may run; null: no limit (--job-timeout)")
    max_body_mb: float = Field(description="the largest request body in MB; larger answers 413 (--max-body-mb)")
    batch: AtMost = Field(
        description="the most images one pipeline call runs for queued jobs that can share it; 1: no batching (--max-batch)"
    )
    parallel_jobs: int = Field(
        description="jobs (or batches) run at the same time: 1 for one process, the replicas under Ray Serve (--replicas); "
        "a client with many independent jobs (a shot's frames) keeps this many in flight"
    )
