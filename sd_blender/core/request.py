"""What the add-on sends to the server: generation settings and control images → job JSON."""
import base64
from dataclasses import dataclass, field

MIN_SIZE = 64
MAX_SIZE = 2048


def round_to_multiple_of_8(value):
    """The size both the passes and the generation use: nearest multiple of 8, within bounds."""
    rounded = int((value + 4) // 8 * 8)
    return min(max(rounded, MIN_SIZE), MAX_SIZE)


@dataclass(frozen=True)
class ControlImage:
    """One rendered pass sent as a ControlNet condition."""

    type: str
    png: bytes
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class GenerationSettings:
    prompt: str
    negative_prompt: str = ""
    seed: int | None = None  # None: the server picks one and reports it
    steps: int = 20
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    num_images: int = 1
    scheduler: str = "unipc"
    controls: tuple[ControlImage, ...] = field(default_factory=tuple)


def _base64(data):
    return base64.b64encode(data).decode("ascii")


def build_job_request(settings):
    """The JSON body of POST /v1/jobs (docs/api.md)."""
    for name in ("width", "height"):
        value = getattr(settings, name)
        if value != round_to_multiple_of_8(value):
            raise ValueError(f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE}, got {value}")
    return {
        "prompt": settings.prompt,
        "negative_prompt": settings.negative_prompt,
        "seed": settings.seed,
        "steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "width": settings.width,
        "height": settings.height,
        "num_images": settings.num_images,
        "scheduler": settings.scheduler,
        "controls": [
            {
                "type": control.type,
                "image": _base64(control.png),
                "weight": control.weight,
                "start": control.start,
                "end": control.end,
            }
            for control in settings.controls
        ],
    }
