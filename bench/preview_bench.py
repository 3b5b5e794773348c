"""What live previews cost: `python bench/preview_bench.py [--size 512] [--steps 20] [--device cuda]`.

1. One preview alone (decode of one predicted clean latent to <= 256 px, then PNG-encoded as the
   server sends it) with the linear approximation and with a full-size TAESD (AutoencoderTiny,
   random weights: speed depends on the shapes), against one denoising step of a full-size SD 1.5
   UNet (random weights, the carried configuration) at --size with CFG (a batch of 2).
2. Whole jobs of the tiny model at --size, --steps, with previews every 3 steps and without
   (the best of --runs, run in turn), as the server runs them.

On --device (default: the server's choice, in its dtype: float16 on CUDA), where the latents are.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from diffusers import AutoencoderTiny, UNet2DConditionModel  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "server"))

from sd_blender_server import registry  # noqa: E402
from sd_blender_server.arguments import quiet_libraries  # noqa: E402
from sd_blender_server.config import ServerConfig  # noqa: E402
from sd_blender_server.engine import GenerationEngine  # noqa: E402
from sd_blender_server.images import encode_preview  # noqa: E402
from sd_blender_server.previews import LinearDecoder, TaesdDecoder, preview_size  # noqa: E402
from sd_blender_server.request import GenerationRequest  # noqa: E402
from sd_blender_server.runner import resolve_device, resolve_dtype  # noqa: E402

PNG_COMPRESSION = ServerConfig.png_compression  # the server's default


def best_seconds(work, repeats: int, device: str = "cpu") -> float:
    """The best of `repeats` timings of work() (a machine shared with other work: the least disturbed;
    on a GPU, the first call's lazy set-up left out), the device's queue waited for."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


def preview_seconds(decoder, size: int, repeats: int, device: str, dtype: torch.dtype) -> float:
    latent = torch.randn(4, size // 8, size // 8, device=device, dtype=dtype)
    return best_seconds(lambda: encode_preview(decoder.image(latent, preview_size(size, size)), PNG_COMPRESSION), repeats)


def unet_step_seconds(size: int, device: str, dtype: torch.dtype) -> float:
    """One CFG denoising step (batch of 2) of a random full-size SD 1.5 UNet."""
    configs = registry.config_folder("sd15")
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")).to(dtype).eval()
        latents, text = torch.randn(2, 4, size // 8, size // 8, dtype=dtype), torch.randn(2, 77, 768, dtype=dtype)
    with torch.inference_mode():
        return best_seconds(lambda: unet(latents, 500, encoder_hidden_states=text), 2 if device == "cpu" else 10, device)


def tiny_job_seconds(size: int, steps: int, runs: int, device: str) -> tuple[float, float]:
    """The best seconds of a tiny-model job without previews and with one every 3 steps (linear), the
    two run in turn so that other work on the machine weighs on both alike."""
    engine = GenerationEngine(ServerConfig(model="tiny", device=device, controlnets={}))
    request = GenerationRequest(prompt="a cabin", seed=1, width=size, height=size, steps=steps)
    engine.generate(request)  # warm-up (and the model's load)

    def job(every: int):
        previewed = dataclasses.replace(request, preview_every=every)
        return lambda: engine.generate(previewed, on_preview=lambda step, total, image: encode_preview(image, PNG_COMPRESSION))

    times = {0: [], 3: []}
    for _ in range(runs):
        for every, seconds in times.items():
            seconds.append(best_seconds(job(every), 1))
    return min(times[0]), min(times[3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    quiet_libraries(debug=False)
    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    torch.manual_seed(0)
    linear = preview_seconds(LinearDecoder("sd15"), args.size, 20, device, dtype)
    taesd = preview_seconds(TaesdDecoder(AutoencoderTiny().to(device, dtype).eval()), args.size, 5, device, dtype)
    step = unet_step_seconds(args.size, device, dtype)
    hardware = torch.cuda.get_device_name() if device.startswith("cuda") else f"threads: {torch.get_num_threads()}"
    print(f"{hardware}, {str(dtype).removeprefix('torch.')}, size {args.size}x{args.size}")
    print(f"one preview: linear {linear * 1000:.1f} ms, full-size TAESD {taesd * 1000:.0f} ms")
    print(f"one SD 1.5 UNet step (CFG, batch 2): {step:.2f} s")
    for name, seconds in (("linear", linear), ("TAESD", taesd)):
        print(f"  {name} every 3 steps: {seconds / 3 / step * 100:.2f} % of the step time")
    without, with_previews = tiny_job_seconds(args.size, args.steps, args.runs, device)
    extra = (with_previews - without) / args.steps
    print(
        f"tiny model, {args.steps} steps: {without:.3f} s without previews, {with_previews:.3f} s with one every "
        f"3 steps (linear): {extra * 1000:.1f} ms a step, {extra / (without / args.steps) * 100:.1f} % of its step time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
