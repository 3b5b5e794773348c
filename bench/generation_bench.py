"""Generation speed and memory with full-size models: `python bench/generation_bench.py [--family sd15|sdxl]`.

No weights can be downloaded where this project is built, so the model is the real architecture
at full size with random weights, built from the configurations the server carries
(server/sd_blender_server/configs/: SD 1.5, SDXL 1.0 base and their ControlNets). Speed and
memory depend on the shapes, not on the values; the images are noise.

The random model is written once into --work as diffusers folders (a pipeline and a ControlNet,
safetensors in the run's dtype), then the server's own GenerationEngine (the code a job runs)
loads them like any downloaded model and runs one warm-up job and --runs timed jobs: --size
square, --steps, one ControlNet per --controls type (each its own model, as depth and openpose
are), every image PNG-encoded with its metadata as the server sends it. Prints the load time,
seconds per image (median and best), denoising steps per second and the peak GPU memory.
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
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # as the server: no warnings about unused image backends

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "server"))

from sd_blender_server import registry  # noqa: E402
from sd_blender_server.cli import quiet_libraries  # noqa: E402
from sd_blender_server.config import ServerConfig  # noqa: E402
from sd_blender_server.engine import GenerationEngine  # noqa: E402
from sd_blender_server.images import encode_png  # noqa: E402
from sd_blender_server.model_sources import carried_tokenizers  # noqa: E402
from sd_blender_server.request import ControlInput, GenerationRequest  # noqa: E402
from sd_blender_server.runner import resolve_device, resolve_dtype  # noqa: E402

DEFAULT_SIZE = {"sd15": 512, "sdxl": 1024}


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


def timed_job(engine: GenerationEngine, request: GenerationRequest) -> float:
    """Seconds for one job as the server runs it: generation, then each image PNG-encoded."""
    _synchronize(engine.device)
    started = time.perf_counter()
    result = engine.generate(request)
    for index, image in enumerate(result.images):
        encode_png(image, result.parameters, index)
    _synchronize(engine.device)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--size", type=int, help="width = height (default: 512 for sd15, 1024 for sdxl)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=1, help="images per job")
    parser.add_argument("--controls", default="depth", help="comma-separated control types, one ControlNet each; '' for none")
    parser.add_argument("--scheduler", default="unipc")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--work", type=Path, help="where the random model is written (default: a temporary folder)")
    args = parser.parse_args()
    quiet_libraries(debug=False)
    size = args.size or DEFAULT_SIZE[args.family]
    controls = [kind for kind in args.controls.split(",") if kind]
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)

    with tempfile.TemporaryDirectory(prefix="sd_blender_generation_bench_") as temporary:
        pipeline_dir, controlnet_dir = build_random_model(args.family, args.work or Path(temporary), dtype, device)
        config = ServerConfig(
            model=str(pipeline_dir), controlnets={kind: str(controlnet_dir) for kind in controls}, device=device, dtype=args.dtype
        )
        engine = GenerationEngine(config)
        request = GenerationRequest(
            prompt="a wooden cabin in a snowy forest, golden hour",
            negative_prompt="blurry",
            width=size,
            height=size,
            steps=args.steps,
            num_images=args.images,
            seed=1,
            scheduler=args.scheduler,
            controls=tuple(ControlInput(kind, control_image(size)) for kind in controls),
        )
        started = time.perf_counter()
        engine.load()
        _synchronize(device)
        load_seconds = time.perf_counter() - started
        first_job_seconds = timed_job(engine, request)  # warm-up: ControlNets loaded, kernels chosen, buffers allocated
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        seconds = [timed_job(engine, request) for _ in range(args.runs)]

    median = statistics.median(seconds)
    hardware = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "CPU"
    print(
        f"{hardware}, torch {torch.__version__}, diffusers {diffusers.__version__}, {str(dtype).removeprefix('torch.')}: "
        f"{args.family} {size}x{size}, {args.steps} steps ({args.scheduler}), {args.images} image(s) a job, "
        f"ControlNets: {', '.join(controls) or 'none'}"
    )
    print(f"load (the base model from the folder, onto {device}): {load_seconds:.1f} s")
    print(f"first job (its ControlNets loaded, kernels chosen): {first_job_seconds:.1f} s")
    print(
        f"job: median {median:.2f} s, best {min(seconds):.2f} s over {args.runs} runs "
        f"({args.steps / median:.1f} steps/s, {median / args.images:.2f} s an image)"
    )
    if device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
