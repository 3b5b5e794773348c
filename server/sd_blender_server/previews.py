"""Live previews: every few denoising steps, the predicted clean latent (x0) of a job's first image
decoded to a small RGB image, with TAESD when it is at hand (a models folder, or the Hugging Face
cache; never downloaded), else with the family's linear latent->RGB approximation.

No HTTP here, and nothing left behind: the scheduler's step is wrapped for one job only."""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from PIL import Image

log = logging.getLogger(__name__)

PREVIEW_LONG_SIDE = 256  # pixels, at most, on a preview's long side
TAESD = "taesd"
LINEAR = "linear"
# TAESD for each latent family: the hub repository (diffusers layout) and the folder name looked
# for in a models folder.
_TAESD_NAMES = {"sd15": TAESD, "sdxl": "taesdxl"}
_TAESD_REPOS = {"sd15": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}
_TAESD_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
# Where a models folder (or its models/ sub-folder) keeps a TAESD folder: at its top, or among the
# approximate VAEs (ComfyUI's vae_approx, A1111's VAE-approx).
_TAESD_PARENTS = (".", "vae_approx", "VAE-approx")

# Linear latent->RGB approximations: RGB = latent channels x FACTORS (+ BIAS), in [-1, 1]. The
# published numbers of ComfyUI's comfy/latent_formats.py (classes SD15 and SDXL; the SD 1.5 ones are
# also A1111's modules/sd_samplers_common.py), for the UNet's (scaled) latents.
_LINEAR_FACTORS = {
    "sd15": (
        (0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177),
    ),
    "sdxl": (
        (0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188),
    ),
}
_LINEAR_BIAS = {"sd15": (0.0, 0.0, 0.0), "sdxl": (0.1084, -0.0175, -0.0011)}


def latent_family(family: str | None) -> str:
    """The latent space a base model's family works in: SDXL's, or SD 1.5's (the tiny model's too)."""
    return "sdxl" if family == "sdxl" else "sd15"


def preview_size(width: int, height: int) -> tuple[int, int]:
    """A preview's size: the image's, scaled down (never up) to PREVIEW_LONG_SIDE on its long side."""
    scale = min(1.0, PREVIEW_LONG_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _has_taesd_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _TAESD_FILES)


def _folder_taesd(name: str, models_dirs: tuple[str, ...]) -> Path | None:
    for models_dir in models_dirs:
        root = Path(models_dir).expanduser()
        for base in (root / "models", root):
            for parent in _TAESD_PARENTS:
                folder = base / parent / name
                if _has_taesd_files(folder):
                    return folder
    return None


def _cached_taesd(repo_id: str) -> Path | None:
    """The hub repository's snapshot folder when its files are in the cache; never the network."""
    try:
        paths = [try_to_load_from_cache(repo_id, name) for name in _TAESD_FILES]
    except Exception:  # an odd cache is no reason to fail a job
        log.debug("cannot look %s up in the cache", repo_id, exc_info=True)
        return None
    if not all(isinstance(path, str) for path in paths):
        return None
    return Path(paths[0]).parent


def taesd_folder(family: str, models_dirs: tuple[str, ...]) -> Path | None:
    """The TAESD of a latent family (a diffusers AutoencoderTiny folder): a models folder's first,
    then the Hugging Face cache's; None when neither has it."""
    return _folder_taesd(_TAESD_NAMES[family], models_dirs) or _cached_taesd(_TAESD_REPOS[family])


def _to_image(rgb: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """A (3, h, w) tensor in [-1, 1] as an RGB image of `size`."""
    pixels = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(pixels, "RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)


class LinearDecoder:
    name = LINEAR

    def __init__(self, family: str):
        self._factors = torch.tensor(_LINEAR_FACTORS[family])
        self._bias = torch.tensor(_LINEAR_BIAS[family])

    def image(self, latent: torch.Tensor, size: tuple[int, int]) -> Image.Image:
        """One (4, h, w) latent as an image of `size`."""
        rgb = torch.einsum("chw,cr->rhw", latent.float().cpu(), self._factors) + self._bias[:, None, None]
        return _to_image(rgb, size)


class TaesdDecoder:
    name = TAESD

    def __init__(self, model):
        self._model = model

    def image(self, latent: torch.Tensor, size: tuple[int, int]) -> Image.Image:
        """One (4, h, w) latent as an image of `size`."""
        with torch.inference_mode():
            rgb = self._model.decode(latent[None].to(self._model.device, self._model.dtype)).sample[0]
        return _to_image(rgb, size)


class PreviewDecoders:
    """The decoder of each latent family: a TAESD found is loaded once (on the device) and kept."""

    def __init__(self, models_dirs: tuple[str, ...], device: str, dtype: torch.dtype):
        self._models_dirs = models_dirs
        self._device, self._dtype = device, dtype
        self._taesd: dict[Path, TaesdDecoder] = {}

    def decoder_name(self, family: str | None) -> str:
        """Which decoder a base model's family previews with (nothing is loaded)."""
        return TAESD if taesd_folder(latent_family(family), self._models_dirs) else LINEAR

    def decoder(self, family: str | None) -> LinearDecoder | TaesdDecoder:
        latents = latent_family(family)
        folder = taesd_folder(latents, self._models_dirs)
        if folder is None:
            return LinearDecoder(latents)
        if folder not in self._taesd:
            from diffusers import AutoencoderTiny

            model = AutoencoderTiny.from_pretrained(folder, torch_dtype=self._dtype).to(self._device)
            self._taesd[folder] = TaesdDecoder(model.eval())
            log.info("previews decoded with TAESD from %s", folder)
        return self._taesd[folder]


def clean_latent(scheduler, output, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
    """The predicted clean latent x0 of a scheduler step: the step's own `pred_original_sample`
    where the scheduler gives it (Euler, DDIM, LMS, Heun...), or its `denoised` (LCM's x0, mixed
    with the sample by its boundary condition), else from the model's prediction and alphas_cumprod
    (UniPC, DPM++, PLMS, TCD): x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)."""
    for name in ("pred_original_sample", "denoised"):
        predicted = getattr(output, name, None)
        if predicted is not None:
            return predicted
    alpha = scheduler.alphas_cumprod[int(timestep)].to(sample.device, torch.float32)
    prediction = scheduler.config.prediction_type
    if prediction == "sample":
        return model_output
    if prediction == "v_prediction":
        return alpha.sqrt() * sample - (1 - alpha).sqrt() * model_output
    return (sample - (1 - alpha).sqrt() * model_output) / alpha.sqrt()


@contextlib.contextmanager
def recorded_steps(scheduler) -> Iterator[Callable[[], torch.Tensor]]:
    """The scheduler's step wrapped (for this block only) to keep its last call; yields a function
    that gives that step's predicted clean latents (the whole batch)."""
    last = {}
    original = scheduler.step

    # The pipelines pass `generator` and `eta` only to a step whose signature names them.
    @functools.wraps(original)
    def step(model_output, timestep, sample, *args, return_dict: bool = True, **options):
        output = original(model_output, timestep, sample, *args, return_dict=True, **options)
        last.update(output=output, model_output=model_output, timestep=timestep, sample=sample)
        return output if return_dict else output.to_tuple()

    scheduler.step = step
    try:
        yield lambda: clean_latent(scheduler, **last)
    finally:
        del scheduler.step  # the class's own method again


class LivePreview:
    """Called after each step: for each of `targets`, a (batch index, every, send) triple, every
    `every` steps (not after the last: the result comes then) image `index` of the batch's predicted
    clean latent, decoded, goes to `send(step, total, image)`. The latents are read once a step,
    and only when a preview is due."""

    def __init__(self, decoder, size: tuple[int, int], targets: list[tuple[int, int, Callable]]):
        self._decoder, self._size, self._targets = decoder, size, targets

    def after_step(self, step: int, total: int, latents: Callable[[], torch.Tensor]) -> None:
        due = [(index, send) for index, every, send in self._targets if not step % every and step < total]
        if not due:
            return
        clean = latents()
        for index, send in due:
            send(step, total, self._decoder.image(clean[index], self._size))
