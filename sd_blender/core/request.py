"""What the add-on sends to the server: generation settings and control images → job JSON."""
import base64
from dataclasses import dataclass, field

MIN_SIZE = 64
MAX_SIZE = 2048
PREVIEW_EVERY = 3  # steps between the previews of a running job (the server's default)


def round_to_multiple_of_8(value):
    """The size both the passes and the generation use: nearest multiple of 8, within bounds."""
    rounded = int((value + 4) // 8 * 8)
    return min(max(rounded, MIN_SIZE), MAX_SIZE)


# The ControlNet type a pass conditions, where it is not the pass's own name.
_CONTROL_TYPE_OF_PASS = {"color": "tile"}


def control_type_for_pass(kind):
    """The server's control type for a pass: the colour pass feeds the tile ControlNet."""
    return _CONTROL_TYPE_OF_PASS.get(kind, kind)


@dataclass(frozen=True)
class ControlImage:
    """One rendered pass sent as a ControlNet condition."""

    type: str
    png: bytes
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    model: str | None = None  # a ControlNet name from /v1/models; None: the server's for `type`


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
    guess_mode: bool = False
    init_png: bytes | None = None  # img2img source image
    strength: float = 0.75
    model: str | None = None  # a base model name from /v1/models; None or "": the server's default
    loras: tuple[tuple[str, float], ...] = ()  # (LoRA name from /v1/models, weight)
    tiling: str | None = None  # "x", "y" or "xy": the image tiles seamlessly along those axes
    preview_every: int = PREVIEW_EVERY  # 0: no previews


def _base64(data):
    return base64.b64encode(data).decode("ascii")


def _control_json(control):
    body = {
        "type": control.type,
        "image": _base64(control.png),
        "weight": control.weight,
        "start": control.start,
        "end": control.end,
    }
    if control.model:
        body["model"] = control.model
    return body


def build_job_request(settings):
    """The JSON body of POST /v1/jobs (docs/api.md)."""
    for name in ("width", "height"):
        value = getattr(settings, name)
        if value != round_to_multiple_of_8(value):
            raise ValueError(f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE}, got {value}")
    body = {
        "prompt": settings.prompt,
        "negative_prompt": settings.negative_prompt,
        "seed": settings.seed,
        "steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "width": settings.width,
        "height": settings.height,
        "num_images": settings.num_images,
        "scheduler": settings.scheduler,
        "controls": [_control_json(control) for control in settings.controls],
        "guess_mode": settings.guess_mode,
        "preview_every": settings.preview_every,
    }
    if settings.init_png is not None:
        body.update(init_image=_base64(settings.init_png), strength=settings.strength)
    if settings.model:
        body["model"] = settings.model
    if settings.loras:
        body["loras"] = [{"name": name, "weight": weight} for name, weight in settings.loras]
    if settings.tiling:
        body["tiling"] = settings.tiling
    return body
