"""Generation speed and memory with full-size models: `python bench/generation_bench.py [--family sd15|sdxl]`.

No weights can be downloaded where this project is built, so the model is the real architecture
at full size with random weights, built from the configurations the server carries
(server/sd_blender_server/configs/: SD 1.5, SDXL 1.0 base and their ControlNets). Speed and
memory depend on the shapes, not on the values; the images are noise.

The random model is written once into --work as diffusers folders (a pipeline and a ControlNet,
safetensors in the run's dtype), then the server's own GenerationEngine (the code a job runs)
loads them like any downloaded model and runs one warm-up job and --runs timed jobs: --size
square, --steps, one ControlNet per --controls type (each its own model, as depth and openpose
are) ending at --control-end, every image PNG-encoded with its metadata as the server sends it.
Prints the load time, seconds per image (median and best), images and denoising steps per second
and the peak GPU memory. --compile (and --compile-mode) and --low-vram run the engine as the
server's flags of those names do.

With --compare the same run also times the plain diffusers pipeline (the stock ControlNet pipeline
loaded from the same folders, same settings, same seed, no server code: `from_pretrained`, `.to()`,
call) before the engine, and prints both, the ratio, the ControlNet time of each (its forward calls
that really ran and their seconds) and how far the two images are apart.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # as the server: no warnings about unused image backends

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, ControlNetModel, ControlNetUnionModel, UNet2DConditionModel  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "server"))

from sd_blender_server import registry  # noqa: E402
from sd_blender_server.arguments import quiet_libraries  # noqa: E402
from sd_blender_server.config import COMPILE_MODES, AccelerationOptions, ServerConfig  # noqa: E402
from sd_blender_server.engine import GenerationEngine  # noqa: E402
from sd_blender_server.images import encode_png  # noqa: E402
from sd_blender_server.model_sources import carried_tokenizers  # noqa: E402
from sd_blender_server.request import ControlInput, GenerationRequest  # noqa: E402
from sd_blender_server.runner import free_memory, resolve_device, resolve_dtype  # noqa: E402
from sd_blender_server.schedulers import SCHEDULERS  # noqa: E402

DEFAULT_SIZE = {"sd15": 512, "sdxl": 1024}
CONTROLNET_CLASSES = (ControlNetModel, ControlNetUnionModel)


def _random_components(family: str) -> dict:
    """Every component of a `family` pipeline at full size, random weights, on the current device."""
    configs = registry.config_folder(family)
    scheduler_config = json.loads((configs / "scheduler" / "scheduler_config.json").read_text())
    components = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")),
        "scheduler": getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config),
        **carried_tokenizers(family),
    }
    if family == "sdxl":
        components["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(configs / "text_encoder_2"))
    else:
        components.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return components


def build_random_model(family: str, work: Path, dtype: torch.dtype, device: str) -> tuple[Path, Path]:
    """The pipeline and ControlNet folders of a random full-size `family` model in `dtype`,
    built (on `device`, where initialising is fast) unless `work` has them already."""
    suffix = str(dtype).removeprefix("torch.")
    pipeline_dir, controlnet_dir = work / f"{family}-{suffix}-pipeline", work / f"{family}-{suffix}-controlnet"
    if (pipeline_dir / "model_index.json").is_file() and (controlnet_dir / "config.json").is_file():
        return pipeline_dir, controlnet_dir
    started = time.perf_counter()
    torch.manual_seed(0)
    pipeline_class = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
    with torch.device(device):  # one model at a time: an SDXL UNet alone is 10 GB in float32
        pipeline_class(**_random_components(family)).to(dtype=dtype).save_pretrained(pipeline_dir)
        controlnet_config = ControlNetModel.load_config(registry.config_folder(family) / "controlnet")
        ControlNetModel.from_config(controlnet_config).to(dtype=dtype).save_pretrained(controlnet_dir)
    print(f"built a random full-size {family} model in {work} ({time.perf_counter() - started:.0f} s)", flush=True)
    return pipeline_dir, controlnet_dir


def control_image(size: int) -> Image.Image:
    """A depth-like control image (a radial gradient), as the server decodes one."""
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    depth = (255 * np.clip(1 - 2 * np.hypot(x, y), 0, 1)).astype(np.uint8)
    return Image.fromarray(depth).convert("RGB")


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_job(engine: GenerationEngine, request: GenerationRequest) -> tuple[float, Image.Image]:
    """Seconds for one job as the server runs it (generation, then each image PNG-encoded), and its first image."""
    _synchronize(engine.device)
    started = time.perf_counter()
    result = engine.generate(request)
    for index, image in enumerate(result.images):
        encode_png(image, result.parameters, index, ServerConfig.png_compression)
    _synchronize(engine.device)
    return time.perf_counter() - started, result.images[0]


class ControlNetClock:
    """The ControlNet forward calls that really ran (a skipped one never reaches the conditioning
    embedding) and the seconds spent in all of them, from module hooks on every ControlNet. Not
    `enabled` with --compile: the hooks would run inside the compiled graphs (graph breaks)."""

    def __init__(self, device: str, enabled: bool = True):
        self.device = device
        self.enabled = enabled
        self.calls = 0
        self.seconds = 0.0
        self._started: dict[int, float] = {}
        self._hooks = []

    def __enter__(self) -> ControlNetClock:
        if self.enabled:
            hooks = torch.nn.modules.module
            self._hooks = [hooks.register_module_forward_pre_hook(self._before), hooks.register_module_forward_hook(self._after)]
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()

    def reset(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def _before(self, module, args) -> None:
        if isinstance(module, CONTROLNET_CLASSES):
            _synchronize(self.device)
            self._started[id(module)] = time.perf_counter()
        elif type(module).__name__ == "ControlNetConditioningEmbedding":
            self.calls += 1

    def _after(self, module, args, output) -> None:
        if isinstance(module, CONTROLNET_CLASSES):
            _synchronize(self.device)
            self.seconds += time.perf_counter() - self._started.pop(id(module))


def stock_pipeline(pipeline_dir: Path, controlnet_dir: Path, controls: list[str], family: str, dtype, device: str, scheduler: str):
    """The plain diffusers ControlNet pipeline (or the plain one without controls) from the bench's folders."""
    if controls:
        controlnets = [ControlNetModel.from_pretrained(controlnet_dir, torch_dtype=dtype) for _ in controls]
        pipeline_class = diffusers.StableDiffusionXLControlNetPipeline if family == "sdxl" else diffusers.StableDiffusionControlNetPipeline
        options = {"controlnet": controlnets[0] if len(controlnets) == 1 else controlnets}
    else:
        pipeline_class = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
        options = {}
    pipeline = pipeline_class.from_pretrained(pipeline_dir, torch_dtype=dtype, **options).to(device)
    chosen = SCHEDULERS[scheduler]
    pipeline.scheduler = getattr(diffusers, chosen.diffusers_class).from_config(pipeline.scheduler.config, **chosen.options)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def timed_stock_job(pipeline, request: GenerationRequest, device: str) -> tuple[float, Image.Image]:
    """Seconds for one call of the stock pipeline with the request's settings, and its first image."""
    arguments = {}
    if request.controls:
        images = [control.image for control in request.controls]
        single = len(images) == 1
        arguments = {
            "image": images[0] if single else images,
            "controlnet_conditioning_scale": request.controls[0].weight if single else [c.weight for c in request.controls],
            "control_guidance_start": [control.start for control in request.controls],
            "control_guidance_end": [control.end for control in request.controls],
        }
    _synchronize(device)
    started = time.perf_counter()
    images = pipeline(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=request.width,
        height=request.height,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        num_images_per_prompt=request.num_images,
        generator=[torch.Generator("cpu").manual_seed(request.seed + index) for index in range(request.num_images)],
        **arguments,
    ).images
    _synchronize(device)
    return time.perf_counter() - started, images[0]


@dataclass
class Measured:
    """One side of the bench: its warm-up job, the timed jobs, peak GPU memory and ControlNet time a job."""

    name: str
    first_seconds: float
    seconds: list[float]
    peak_gib: float | None
    reserved_gib: float | None
    controlnet_calls: float
    controlnet_seconds: float
    image: Image.Image

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def measure(name: str, job, runs: int, device: str, clock: ControlNetClock) -> Measured:
    """A warm-up job (ControlNets loaded, kernels chosen, buffers allocated), then `runs` timed ones."""
    first_seconds, image = job()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    clock.reset()
    seconds = [job()[0] for _ in range(runs)]
    cuda = device.startswith("cuda")
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    reserved = torch.cuda.max_memory_reserved() / 2**30 if cuda else None
    return Measured(name, first_seconds, seconds, peak, reserved, clock.calls / runs, clock.seconds / runs, image)


def report(measured: Measured, steps: int, images: int) -> None:
    median = measured.median
    line = (
        f"{measured.name}: median {median:.2f} s, best {min(measured.seconds):.2f} s over {len(measured.seconds)} runs "
        f"({steps / median:.1f} steps/s, {median / images:.3f} s an image, {images / median:.1f} images/s; "
        f"first job {measured.first_seconds:.1f} s)"
    )
    if measured.controlnet_calls:
        line += f"; ControlNet {measured.controlnet_calls:.0f} forward calls, {measured.controlnet_seconds:.2f} s a job"
    if measured.peak_gib is not None:
        line += f"; peak GPU memory {measured.peak_gib:.2f} GiB ({measured.reserved_gib:.2f} GiB reserved)"
    print(line)


def image_difference(first: Image.Image, second: Image.Image) -> int:
    """The largest difference of any channel of any pixel, 0-255."""
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--size", type=int, help="width = height (default: 512 for sd15, 1024 for sdxl)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=1, help="images per job")
    parser.add_argument("--controls", default="depth", help="comma-separated control types, one ControlNet each; '' for none")
    parser.add_argument("--control-end", type=float, default=1.0, help="where the controls stop, a fraction of the steps")
    parser.add_argument("--scheduler", default="unipc")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--compare", action="store_true", help="time the stock diffusers pipeline too, in the same run")
    parser.add_argument("--compile", action="store_true", help="the engine with torch.compile, as the server's --compile")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, help="(default: the server's for the device)")
    parser.add_argument("--low-vram", action="store_true", help="the engine with model CPU offload and VAE tiling, as --low-vram")
    parser.add_argument("--work", type=Path, help="where the random model is written (default: a temporary folder)")
    args = parser.parse_args()
    quiet_libraries(debug=False)
    size = args.size or DEFAULT_SIZE[args.family]
    controls = [kind for kind in args.controls.split(",") if kind]
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    request = GenerationRequest(
        prompt="a wooden cabin in a snowy forest, golden hour",
        negative_prompt="blurry",
        width=size,
        height=size,
        steps=args.steps,
        num_images=args.images,
        seed=1,
        scheduler=args.scheduler,
        controls=tuple(ControlInput(kind, control_image(size), end=args.control_end) for kind in controls),
    )
    hardware = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "CPU"
    print(
        f"{hardware}, torch {torch.__version__}, diffusers {diffusers.__version__}, {str(dtype).removeprefix('torch.')}: "
        f"{args.family} {size}x{size}, {args.steps} steps ({args.scheduler}), {args.images} image(s) a job, "
        f"ControlNets: {', '.join(controls) or 'none'} (ending at {args.control_end:g})"
        + "".join(f", {flag}" for flag, on in (("--compile", args.compile), ("--low-vram", args.low_vram)) if on),
        flush=True,
    )

    clock = ControlNetClock(device, enabled=not args.compile)
    with tempfile.TemporaryDirectory(prefix="sd_blender_generation_bench_") as temporary, clock:
        pipeline_dir, controlnet_dir = build_random_model(args.family, args.work or Path(temporary), dtype, device)
        stock = None
        if args.compare:
            pipeline = stock_pipeline(pipeline_dir, controlnet_dir, controls, args.family, dtype, device, args.scheduler)
            stock = measure("stock diffusers", lambda: timed_stock_job(pipeline, request, device), args.runs, device, clock)
            report(stock, args.steps, args.images)
            del pipeline
            free_memory()
        acceleration = AccelerationOptions(compile=args.compile, compile_mode=args.compile_mode, low_vram=args.low_vram)
        config = ServerConfig(
            model=str(pipeline_dir), controlnets={kind: str(controlnet_dir) for kind in controls}, device=device, dtype=args.dtype,
            acceleration=acceleration,
        )
        engine = GenerationEngine(config)
        started = time.perf_counter()
        engine.load()
        _synchronize(device)
        print(f"load (the base model from the folder, onto {device}): {time.perf_counter() - started:.1f} s")
        server = measure("sd_blender engine", lambda: timed_job(engine, request), args.runs, device, clock)
        report(server, args.steps, args.images)

    if stock is not None:
        print(
            f"engine vs stock: {stock.median / server.median:.2f}x as fast "
            f"(ControlNet time {server.controlnet_seconds:.2f} s vs {stock.controlnet_seconds:.2f} s a job); "
            f"first images differ by at most {image_difference(stock.image, server.image)}/255"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
