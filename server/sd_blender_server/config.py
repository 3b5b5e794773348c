"""The server's configuration: built once from the command line (cli.main) and passed down to
the app, the job queue, the engine and request validation. Every default is written here."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_PORT = 7870
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# The ControlNet serving each control type by default (SD 1.5, ControlNet v1.1); its keys are the
# control types the add-on's passes condition (the tiny model builds one ControlNet for each).
DEFAULT_CONTROLNETS = MappingProxyType({
    "depth": "lllyasviel/control_v11f1p_sd15_depth",
    "normal": "lllyasviel/control_v11p_sd15_normalbae",
    "openpose": "lllyasviel/control_v11p_sd15_openpose",
    "lineart": "lllyasviel/control_v11p_sd15_lineart",
    "canny": "lllyasviel/control_v11p_sd15_canny",
    "seg": "lllyasviel/control_v11p_sd15_seg",
    "tile": "lllyasviel/control_v11f1e_sd15_tile",
})
CONTROL_TYPES = tuple(DEFAULT_CONTROLNETS)
# The control type naming an SDXL ControlNet Union model: one ControlNet serving several types.
UNION = "union"
# --max-batch auto: images one pipeline call may run for several queued jobs on CUDA, as many as
# one job may ask for (so a batch needs no more memory than the largest job); 1 elsewhere, where
# a batch gains little (the CPU) or was not measured (MPS).
AUTO_MAX_BATCH_CUDA = 8


@dataclass(frozen=True)
class Bounds:
    """The closed range a number must lie in."""

    min: float
    max: float


@dataclass(frozen=True)
class SizeBounds:
    """The range of a width or height, and what it must be a multiple of."""

    min: int = 64
    max: int = 2048
    multiple_of: int = 8


@dataclass(frozen=True)
class RequestLimits:
    """What a job request may ask for."""

    max_pixels: int = 2048 * 2048  # width x height, defaults included
    width: SizeBounds = SizeBounds()
    height: SizeBounds = SizeBounds()
    steps: Bounds = Bounds(1, 150)
    num_images: Bounds = Bounds(1, 8)
    guidance_scale: Bounds = Bounds(0.0, 30.0)
    strength: Bounds = Bounds(0.0, 1.0)
    prompt_max_length: int = 4000
    max_controls: int = 4
    control_weight: Bounds = Bounds(0.0, 2.0)
    max_loras: int = 8
    lora_weight: Bounds = Bounds(-4.0, 4.0)
    max_views: int = 16  # views of a synchronized texture job
    max_frames: int = 8  # frames of a frame job (its anchor not counted)
    texture_size: Bounds = Bounds(16, 1024)  # the side of a texture job's latent texture

    @property
    def max_input_pixels(self) -> int:
        """The most pixels an input image (control or init image) may decode to."""
        return 4 * self.max_pixels


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class AccelerationOptions:
    """What the command line asks of acceleration.py; None leaves the choice to the device."""

    fast_defaults: bool = True  # channels_last and fused QKV on CUDA
    channels_last: bool | None = None
    fused_qkv: bool | None = None
    compile: bool = False  # torch.compile of the UNet, ControlNets and VAE decoder
    compile_mode: str | None = None  # one of COMPILE_MODES; None: max-autotune-no-cudagraphs on CUDA, default elsewhere
    low_vram: bool = False  # model CPU offload (CUDA), VAE tiling and slicing


@dataclass(frozen=True)
class ServerConfig:
    model: str = DEFAULT_MODEL  # hub id, diffusers folder, .safetensors file or `tiny`
    # The ControlNet serving each control type (see controlnets_for).
    controlnets: Mapping[str, str] = field(default_factory=lambda: DEFAULT_CONTROLNETS)
    device: str = "auto"
    dtype: str = "auto"
    acceleration: AccelerationOptions = AccelerationOptions()
    cache_dir: str | None = None  # where the tiny model is built; None: $XDG_CACHE_HOME/sd_blender
    models_dirs: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    max_queue: int = 32  # jobs that may wait
    job_timeout: float | None = 600.0  # seconds a job may run; None: no limit
    keep_results: int = 200  # finished jobs kept
    result_ttl: float = 3600.0  # seconds a finished job is kept
    max_body_mb: float = 64.0
    max_batch: int | None = None  # images one pipeline call may run for several queued jobs; None: auto
    png_compression: int = 0  # zlib level of the PNGs sent; 0: stored, the fastest to write and read
    request: RequestLimits = RequestLimits()

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    def max_batch_on(self, device: str) -> int:
        """max_batch, or for auto the default of the device the engine runs on."""
        if self.max_batch is not None:
            return self.max_batch
        return AUTO_MAX_BATCH_CUDA if device.startswith("cuda") else 1


def controlnets_for(model: str, overrides: list[tuple[str, str]]) -> MappingProxyType:
    """The ControlNet serving each control type: the defaults (SD 1.5's, or tiny's for the tiny
    model) with the command line's overrides; a Union model replaces the defaults."""
    if any(control_type == UNION for control_type, _ in overrides):
        return MappingProxyType(dict(overrides))
    defaults = dict.fromkeys(CONTROL_TYPES, "tiny") if model == "tiny" else DEFAULT_CONTROLNETS
    return MappingProxyType({**defaults, **dict(overrides)})
