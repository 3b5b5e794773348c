"""Acceleration (acceleration.py) through real HTTP on the tiny model, on the CPU: fused QKV
projections with channels_last, --compile and --low-vram give the images of a stock server
(--no-fast-defaults) within float tolerance, for a job with a ControlNet, a job with a LoRA (which a
fused projection would skip), a seamless tiling job (which changes the convolutions' padding) and a
frame job with an anchor (which sets its own attention processors); /health reports what is applied.

Model CPU offload needs CUDA: on this machine --low-vram is VAE tiling and slicing, which the tiny
VAE (sample_size 512) applies past 512 pixels."""
import httpx
import numpy as np
import pytest
import torch
from live_server import running_server
from PIL import Image
from server_helpers import fetch_image, image_base64, wait_finished

from sd_blender_server.acceleration import attention_kind, unfused
from sd_blender_server.cross_frame import cross_frame_attention

SIZE = 512  # the tiny model's own size: the compiled server's warm-up compiled for it
RANDOM = np.random.default_rng(7)
CONTROL = image_base64(Image.fromarray(RANDOM.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)))
CONTROL_JOB = {
    "prompt": "a house", "seed": 3, "steps": 4, "width": SIZE, "height": SIZE,
    "controls": [{"type": "depth", "image": CONTROL}],
}
LORA_JOB = {"prompt": "a house", "seed": 3, "steps": 4, "width": SIZE, "height": SIZE,
            "loras": [{"name": "tiny_style", "weight": 3.0}]}
TILING_JOB = {"prompt": "tiles", "seed": 3, "steps": 4, "width": SIZE, "height": SIZE, "tiling": "xy"}
INITS = [image_base64(Image.fromarray(RANDOM.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))) for _ in range(2)]
FRAME_JOB = {
    "prompt": "a walk", "seed": 5, "steps": 4, "width": SIZE, "height": SIZE, "strength": 0.8,
    "controls": [{"type": "depth"}],
    "frames": [{"control_images": [CONTROL], "init_image": init} for init in INITS[1:]],
    "anchor": {"control_images": [CONTROL], "init_image": INITS[0]},
}
# Larger than the tiny VAE's 512-pixel tiles: --low-vram decodes it in tiles.
LARGE_CONTROL_JOB = {**CONTROL_JOB, "width": 768, "height": 576, "steps": 2,
                     "controls": [{"type": "depth", "image": image_base64(Image.new("RGB", (768, 576), (90, 90, 90)))}]}
# Pixel values (0-255): float differences move a few by a level or two; a skipped LoRA, a lost
# seam or a wrong anchor moves them by tens.
MEAN_TOLERANCE, MAX_TOLERANCE = 0.25, 12
# A tiled VAE blends overlapping tiles: close to the untiled decode, not equal.
TILED_MEAN_TOLERANCE = 6.0


@pytest.fixture(scope="module")
def models(tiny_cache, tmp_path_factory):
    """A models folder with a LoRA for the tiny model (`tiny_style`)."""
    from model_builders import tiny_lora
    from sd_blender_server.tiny import ensure_tiny_model

    folder = tmp_path_factory.mktemp("acceleration") / "models"
    (folder / "loras").mkdir(parents=True)
    tiny_lora(ensure_tiny_model(tiny_cache) / "pipeline", folder / "loras" / "tiny_style.safetensors", seed=1)
    return folder


def serve(tiny_cache, models, *flags: str):
    """A client of a live CPU server with `flags`, and the server (for its log)."""
    start_timeout = 3600 if "--compile" in flags else 120  # compiling on a shared CPU takes minutes
    with running_server("--device", "cpu", "--models-dir", str(models), *flags, cache_dir=tiny_cache,
                        start_timeout=start_timeout) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client, live


@pytest.fixture(scope="module")
def stock(tiny_cache, models):
    yield from serve(tiny_cache, models, "--no-fast-defaults")


@pytest.fixture(scope="module")
def fused(tiny_cache, models):
    yield from serve(tiny_cache, models, "--fused-qkv", "--channels-last")


@pytest.fixture(scope="module")
def compiled(tiny_cache, models):
    yield from serve(tiny_cache, models, "--compile")


@pytest.fixture(scope="module")
def low_vram(tiny_cache, models):
    yield from serve(tiny_cache, models, "--low-vram")


def images(client: httpx.Client, body: dict, path: str = "/v1/jobs") -> list[np.ndarray]:
    response = client.post(path, json=body)
    assert response.status_code == 202, response.text
    status = wait_finished(client, response.json()["id"], timeout=3600)  # a first compile per size: minutes
    assert status["state"] == "done", status
    return [np.asarray(fetch_image(client, image), dtype=np.float64) for image in status["images"]]


def assert_close(actual: list[np.ndarray], expected: list[np.ndarray], mean_tolerance: float = MEAN_TOLERANCE,
                 max_tolerance: float = MAX_TOLERANCE) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        difference = np.abs(got - want)
        assert difference.mean() <= mean_tolerance and difference.max() <= max_tolerance, (
            f"mean {difference.mean():.3f}, max {difference.max():.0f}"
        )


def assert_differ(first: list[np.ndarray], second: list[np.ndarray]) -> None:
    """What a test compares makes a difference the tolerance would see."""
    difference = np.abs(first[0] - second[0]).mean()
    assert difference > 4 * MEAN_TOLERANCE, f"mean {difference:.3f}"


JOBS = {
    "controlnet": (CONTROL_JOB, "/v1/jobs"),
    "lora": (LORA_JOB, "/v1/jobs"),
    "tiling": (TILING_JOB, "/v1/jobs"),
    "frames": (FRAME_JOB, "/v1/frame-jobs"),
}


@pytest.fixture(scope="module")
def stock_images(stock):
    client, _ = stock
    return {name: images(client, body, path) for name, (body, path) in JOBS.items()}


def test_a_lora_and_tiling_change_the_image_past_the_tolerance(stock, stock_images):
    """Losing either would fail the comparisons. (The tiny model's anchor moves pixels by less than a
    level: test_cross_frame_attention_reads_the_unfused_projections checks it on the UNet's output.)"""
    client, _ = stock
    plain = {key: value for key, value in LORA_JOB.items() if key != "loras"}
    plain_images = images(client, plain)
    assert_differ(stock_images["lora"], plain_images)
    assert_differ(stock_images["tiling"], plain_images)


def test_a_stock_server_says_so(stock):
    client, _ = stock
    assert client.get("/health").json()["acceleration"] == {
        "compile": False, "compile_mode": None, "low_vram": False, "cpu_offload": False,
        "channels_last": False, "fused_qkv": False, "attention": "sdpa",
    }


@pytest.mark.parametrize("job", JOBS)
def test_fused_projections_and_channels_last_give_stock_images(fused, stock_images, job):
    client, _ = fused
    body, path = JOBS[job]
    assert_close(images(client, body, path), stock_images[job])


def test_fused_server_reports_them(fused):
    client, _ = fused
    acceleration = client.get("/health").json()["acceleration"]
    assert (acceleration["fused_qkv"], acceleration["channels_last"], acceleration["compile"]) == (True, True, False)


@pytest.mark.parametrize("job", JOBS)
def test_a_compiled_server_gives_stock_images(compiled, stock_images, job):
    client, _ = compiled
    body, path = JOBS[job]
    assert_close(images(client, body, path), stock_images[job])


def test_a_compiled_server_warmed_up_at_its_size_and_says_what_it_compiles(compiled, stock_images):
    client, live = compiled
    assert client.get("/health").json()["acceleration"]["compile"] is True
    log = live.log()
    assert "compiling the UNet and VAE decoder for 512x512 (warm-up job)" in log
    assert f"first job at {SIZE}x{SIZE} with 1 ControlNet(s): compiling for it" in log
    assert "a job with LoRAs runs uncompiled" in log


def test_low_vram_gives_stock_images_with_a_controlnet(low_vram, stock, stock_images):
    client, _ = low_vram
    assert_close(images(client, CONTROL_JOB), stock_images["controlnet"])
    assert_close(images(client, TILING_JOB), stock_images["tiling"])  # a seamless job decodes untiled


def test_low_vram_decodes_a_large_image_in_tiles_close_to_whole(low_vram, stock):
    tiled = images(low_vram[0], LARGE_CONTROL_JOB)
    whole = images(stock[0], LARGE_CONTROL_JOB)
    assert_close(tiled, whole, TILED_MEAN_TOLERANCE, 255)
    assert np.abs(tiled[0] - whole[0]).max() > 0  # the tiles were blended: not the whole decode


def test_low_vram_reports_its_mode_and_that_offload_needs_cuda(low_vram):
    client, live = low_vram
    acceleration = client.get("/health").json()["acceleration"]
    assert (acceleration["low_vram"], acceleration["cpu_offload"]) == (True, False)
    assert "--low-vram on cpu: no model CPU offload (it needs CUDA); VAE tiling and slicing only" in live.log()


def tiny_unet(tiny_cache):
    from diffusers import UNet2DConditionModel
    from sd_blender_server.tiny import ensure_tiny_model

    return UNet2DConditionModel.from_pretrained(ensure_tiny_model(tiny_cache) / "pipeline" / "unet").eval()


def unet_output(unet) -> torch.Tensor:
    """The UNet's prediction for a fixed batch of 4 (two groups of an anchor and a frame)."""
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(4, 4, 16, 16, generator=generator)
    text = torch.randn(4, 77, 32, generator=generator)
    with torch.inference_mode():
        return unet(sample, 500, text).sample


def test_diffusers_attention_is_sdpa_fused_or_not(tiny_cache):
    unet = tiny_unet(tiny_cache)
    assert attention_kind(unet) == "sdpa"
    unet.fuse_qkv_projections()
    assert attention_kind(unet) == "sdpa"


def test_cross_frame_attention_reads_the_unfused_projections(tiny_cache):
    """cross_frame.py puts its own processor (the layer's to_q/to_k/to_v) on attn1: on a fused UNet it
    gives what it gives on a stock one, and the anchor does change the prediction."""
    unet = tiny_unet(tiny_cache)
    plain = unet_output(unet)
    with cross_frame_attention([unet], 2):
        stock_frames = unet_output(unet)
    unet.fuse_qkv_projections()
    with cross_frame_attention([unet], 2):
        fused_frames = unet_output(unet)
    torch.testing.assert_close(fused_frames, stock_frames, rtol=1e-4, atol=1e-5)
    assert (stock_frames - plain).abs().max() > 1e-3


def test_a_lora_acts_through_unfused_layers_only(tiny_cache):
    """A fused projection skips peft's layers on to_q/to_k/to_v; within unfused() the LoRA acts as on
    a stock UNet, and the fused processors are back after."""
    from peft import LoraConfig

    fused = tiny_unet(tiny_cache)
    fused.fuse_qkv_projections()
    fused_processors = {name: type(processor) for name, processor in fused.attn_processors.items()}
    lora = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"])
    fused.add_adapter(lora)
    torch.manual_seed(0)
    for name, parameter in fused.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    stock = tiny_unet(tiny_cache)
    stock.add_adapter(lora)
    stock.load_state_dict(fused.state_dict(), strict=False)  # the same LoRA weights; to_qkv is fused's own
    with unfused([fused]):
        with_lora = unet_output(fused)
    torch.testing.assert_close(with_lora, unet_output(stock), rtol=1e-4, atol=1e-5)
    assert (unet_output(fused) - with_lora).abs().max() > 1e-2  # fused, the LoRA is skipped
    assert {name: type(processor) for name, processor in fused.attn_processors.items()} == fused_processors
