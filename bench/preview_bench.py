"""What live previews cost: `python bench/preview_bench.py [--size 512] [--steps 20]`.

1. One preview alone (decode of one predicted clean latent to <= 256 px, then PNG-encoded as the
   server sends it) with the linear approximation and with a full-size TAESD (AutoencoderTiny,
   random weights: speed depends on the shapes), against one denoising step of a full-size SD 1.5
   UNet (random weights, the carried configuration) at --size with CFG (a batch of 2).
2. Whole jobs of the tiny model at --size, --steps, with previews every 3 steps and without
   (the best of --runs, run in turn), as the server runs them.
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
from sd_blender_server.previews import LinearDecoder, TaesdDecoder, encode_preview, preview_size  # noqa: E402
from sd_blender_server.request import GenerationRequest  # noqa: E402


def best_seconds(work, repeats: int) -> float:
    """The best of `repeats` timings of work() (a machine shared with other work: the least disturbed)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def preview_seconds(decoder, size: int, repeats: int) -> float:
    latent = torch.randn(4, size // 8, size // 8)
    return best_seconds(lambda: encode_preview(decoder.image(latent, preview_size(size, size))), repeats)


def unet_step_seconds(size: int) -> float:
    """One CFG denoising step (batch of 2) of a random full-size SD 1.5 UNet."""
    configs = registry.config_folder("sd15")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")).eval()
    latents, text = torch.randn(2, 4, size // 8, size // 8), torch.randn(2, 77, 768)
    with torch.inference_mode():
        return best_seconds(lambda: unet(latents, 500, encoder_hidden_states=text), 2)


def tiny_job_seconds(size: int, steps: int, runs: int) -> tuple[float, float]:
    """The best seconds of a tiny-model job without previews and with one every 3 steps (linear), the
    two run in turn so that other work on the machine weighs on both alike."""
    engine = GenerationEngine(ServerConfig(model="tiny", device="cpu", controlnets={}))
    request = GenerationRequest(prompt="a cabin", seed=1, width=size, height=size, steps=steps)
    engine.generate(request)  # warm-up (and the model's load)

    def job(every: int):
        previewed = dataclasses.replace(request, preview_every=every)
        return lambda: engine.generate(previewed, on_preview=lambda step, total, image: encode_preview(image))

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
    args = parser.parse_args()
    quiet_libraries(debug=False)
    torch.manual_seed(0)
    linear = preview_seconds(LinearDecoder("sd15"), args.size, 20)
    taesd = preview_seconds(TaesdDecoder(AutoencoderTiny().eval()), args.size, 5)
    step = unet_step_seconds(args.size)
    print(f"threads: {torch.get_num_threads()}, size {args.size}x{args.size}")
    print(f"one preview: linear {linear * 1000:.1f} ms, full-size TAESD {taesd * 1000:.0f} ms")
    print(f"one SD 1.5 UNet step (CFG, batch 2): {step:.2f} s")
    for name, seconds in (("linear", linear), ("TAESD", taesd)):
        print(f"  {name} every 3 steps: {seconds / 3 / step * 100:.2f} % of the step time")
    without, with_previews = tiny_job_seconds(args.size, args.steps, args.runs)
    extra = (with_previews - without) / args.steps
    print(
        f"tiny model, {args.steps} steps: {without:.3f} s without previews, {with_previews:.3f} s with one every "
        f"3 steps (linear): {extra * 1000:.1f} ms a step, {extra / (without / args.steps) * 100:.1f} % of its step time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
