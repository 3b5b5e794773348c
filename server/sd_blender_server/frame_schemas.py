"""The wire model of a frame job (POST /v1/frame-jobs), pydantic v2, bounded by the server's
RequestLimits like an ordinary job's (schemas.py), whose fields and models it reuses, so the two
cannot drift apart."""
from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from .config import RequestLimits
from .schemas import (
    MaskFitsInitImage,
    control_models,
    errors_at,
    input_image_types,
    job_request_model,
    no_step_left,
    shared_settings_model,
)
from .texture_schemas import SHARED_FIELDS

# The fields a frame job shares with an ordinary job (same meaning, bounds and defaults).
FRAME_FIELDS = (*SHARED_FIELDS, "strength", "guess_mode")


def frame_request_model(limits: RequestLimits) -> type[BaseModel]:
    """The model of a POST /v1/frame-jobs body bounded by `limits`."""
    job_request = job_request_model(limits)
    control_settings, _ = control_models(limits)
    base64_image, base64_mask = input_image_types(limits)

    class Anchor(BaseModel):
        model_config = job_request.model_config
        control_images: list[base64_image] = Field(
            default_factory=list, max_length=limits.max_controls,
            description="one image per control, in the order of `controls`",
        )
        init_image: base64_image | None = Field(
            None, description="img2img source image (`strength` applies); every frame has one, or none"
        )

    class Frame(Anchor, MaskFitsInitImage):
        mask_image: base64_mask | None = Field(
            None,
            description=(
                "inpainting mask of init_image, the same size: white is repainted, black kept (init_image's own "
                "pixels), gray blends them; needs init_image"
            ),
        )

    class FrameJobRequest(shared_settings_model(job_request, "FrameJobSettings", FRAME_FIELDS)):
        controls: list[control_settings] = Field(
            default_factory=list, max_length=limits.max_controls,
            description="as in POST /v1/jobs but without images (each frame has them); they apply to every frame",
        )
        frames: list[Frame] = Field(
            min_length=1, max_length=limits.max_frames,
            description="run as one batch, from one seed; one image each, in this order (--max-frames)",
        )
        anchor: Anchor | None = Field(
            None,
            description=(
                "a frame every frame's self-attention layers also read (cross-frame attention), computed in the "
                "same batch from the same seed, so that it is the same in every chunk; not returned. With "
                "inpainted frames it keeps its whole image"
            ),
        )

        @model_validator(mode="after")
        def _images_fit_the_controls_and_each_other(self) -> FrameJobRequest:
            # One batch: every frame and the anchor are txt2img, or every one img2img (or inpainted).
            img2img = self.frames[0].init_image is not None
            alike = (
                "is missing: frame 0 has an init_image, so every frame and the anchor need one"
                if img2img
                else "must be null: frame 0 has no init_image, so no frame or anchor may have one"
            )
            items = [(("frames", index), frame) for index, frame in enumerate(self.frames)]
            if self.anchor is not None:
                items.append((("anchor",), self.anchor))
            errors = []
            for path, item in items:
                if len(item.control_images) != len(self.controls):
                    message = f"has {len(item.control_images)} images for {len(self.controls)} controls: one per control"
                    errors.append(((*path, "control_images"), "control_images", message))
                if (item.init_image is not None) != img2img:
                    errors.append(((*path, "init_image"), "init_image", alike))
            reason = no_step_left(self.steps, self.strength)
            if img2img and reason:
                errors.append((("strength",), "no_step_left", reason))
            if errors:
                raise errors_at(self, errors)
            return self

    return FrameJobRequest


# The model of a server with the default limits (what clients can check a request against offline).
FrameJobRequest = frame_request_model(RequestLimits())
