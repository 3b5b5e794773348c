"""Seamless tiling (`tiling`: x, y, xy) through real HTTP on the tiny model and a toy SDXL, and the
convolution patch itself on a UNet with LoRA-wrapped convolutions.

The seam statistic: the images rolled by half their width (height for y), the mean absolute
difference between each pair of neighbouring columns (rows), averaged over rows, channels and four
images. The tiny model's images are noise, so neighbouring columns differ a lot everywhere and
differ more across the edges of its grid (8 pixels of the VAE, times 2 for each of the UNet's two
downsamplings) than inside it. A tiled image's wrap is no stronger than the strongest step between
neighbours elsewhere. An untiled one's is stronger than every other step at the same place in the
32-pixel grid: those are the fair comparison, since the wrap always falls on that grid's edge.
"""
import httpx
import numpy as np
import pytest
import torch
from live_server import running_server
from model_builders import toy_sdxl_folders
from sd_blender_server.tiny import ensure_tiny_model
from server_helpers import LONG_JOB, fetch_image, field_error, run_job, submit, wait_finished, wait_running

JOB = {"prompt": "tiles", "width": 256, "height": 256, "steps": 8, "seed": 0, "num_images": 4}
GRID = 32  # pixels: the VAE's 8 times the tiny UNet's two downsamplings by 2


def _images(client, **body) -> list[np.ndarray]:
    status = run_job(client, **{**JOB, **body})
    return [np.asarray(fetch_image(client, path), dtype=np.float64) for path in status["images"]]


def _steps(images: list[np.ndarray], axis: str) -> np.ndarray:
    """Mean absolute difference between neighbouring columns (axis x) or rows (y) of the images
    rolled by half their size: index i is the step from column i to i + 1; the wrap is at size // 2 - 1."""
    steps = []
    for image in images:
        columns = image if axis == "x" else image.transpose(1, 0, 2)
        rolled = np.roll(columns, columns.shape[1] // 2, axis=1)
        steps.append(np.abs(np.diff(rolled, axis=1)).mean(axis=(0, 2)))
    return np.mean(steps, axis=0)


def _wrap_and_others(images: list[np.ndarray], axis: str) -> tuple[float, np.ndarray, np.ndarray]:
    """The step at the wrap, every other step, and the other steps on the edges of the model's grid."""
    steps = _steps(images, axis)
    wrap = len(steps) // 2
    others = np.delete(steps, wrap)
    on_grid = np.array([steps[index] for index in range(GRID - 1, len(steps), GRID) if index != wrap])
    return steps[wrap], others, on_grid


@pytest.fixture(scope="module")
def plain(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as client:
        return _images(client)


@pytest.mark.parametrize("tiling", ["x", "y", "xy"])
def test_a_tiled_image_has_no_seam_where_it_wraps(client, plain, tiling):
    tiled = _images(client, tiling=tiling)
    for axis in "xy":
        wrap, others, on_grid = _wrap_and_others(tiled, axis)
        plain_wrap, _, plain_on_grid = _wrap_and_others(plain, axis)
        assert plain_wrap > plain_on_grid.max(), (axis, plain_wrap, plain_on_grid)  # untiled: a seam
        if axis in tiling:
            assert wrap <= others.max(), (axis, wrap, others.max())
            assert wrap < plain_wrap
        else:
            assert wrap > on_grid.max(), (axis, wrap, on_grid)  # the other axis is left as it was


@pytest.fixture(scope="module")
def sdxl_client(tiny_cache, tmp_path_factory):
    models = tmp_path_factory.mktemp("tiling") / "models"
    toy_sdxl_folders(ensure_tiny_model(tiny_cache), models)
    with running_server("--models-dir", str(models), cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=120) as client:
            yield client


def test_sdxl_tiles_too_and_the_next_job_is_as_before(sdxl_client):
    toy_xl = {"model": "toy-xl", "width": 128, "height": 128}
    plain = _images(sdxl_client, **toy_xl)
    tiled = _images(sdxl_client, **toy_xl, tiling="xy")
    for axis in "xy":
        wrap, others, _ = _wrap_and_others(tiled, axis)
        plain_wrap, _, _ = _wrap_and_others(plain, axis)
        assert wrap <= others.max() and wrap < plain_wrap, (axis, wrap, others.max(), plain_wrap)
    assert [image.tobytes() for image in _images(sdxl_client, **toy_xl)] == [image.tobytes() for image in plain]


def test_tiling_is_undone_after_each_job_done_or_cancelled(client, plain):
    status = run_job(client, **JOB, tiling="xy")
    assert status["parameters"]["tiling"] == "xy"
    assert [image.tobytes() for image in _images(client)] == [image.tobytes() for image in plain]

    cancelled = submit(client, **LONG_JOB, tiling="x")
    wait_running(client, cancelled)
    assert client.delete(f"/v1/jobs/{cancelled}").status_code == 202
    assert wait_finished(client, cancelled)["state"] == "cancelled"
    assert [image.tobytes() for image in _images(client)] == [image.tobytes() for image in plain]


def test_tiling_is_x_y_or_xy(client):
    message = field_error(client.post("/v1/jobs", json={**JOB, "tiling": "z"}), "tiling")
    assert "'x', 'y' or 'xy'" in message
    assert "tiling" not in run_job(client, width=64, height=64, steps=2)["parameters"]


def test_lora_wrapped_convolutions_wrap_too(tiny_cache):
    """With every padded convolution circular along x, the UNet commutes with rolling its input along x
    by a multiple of its grid; LoRA convolutions (peft wraps the original Conv2d) included."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from sd_blender_server.tiling import seamless
    from sd_blender_server.tiny import ensure_tiny_model

    unet = UNet2DConditionModel.from_pretrained(ensure_tiny_model(tiny_cache) / "pipeline" / "unet").eval()
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, target_modules=["conv_in", "conv1", "conv2", "conv_out"], init_lora_weights=False))
    generator = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 4, 16, 16, generator=generator), torch.randn(1, 77, 32, generator=generator)
    shift = GRID // 8  # in latent pixels

    def run(sample):
        return unet(sample, 10, text).sample

    with torch.no_grad():
        before, before_shifted = run(latents), run(torch.roll(latents, shift, dims=3))
        with seamless([unet], "x"):
            tiled, tiled_shifted = run(latents), run(torch.roll(latents, shift, dims=3))
        after = run(latents)
        unet.disable_adapters()
        with seamless([unet], "x"):
            without_lora = run(latents)
    assert torch.allclose(torch.roll(tiled, shift, dims=3), tiled_shifted, atol=1e-5)
    assert not torch.allclose(torch.roll(before, shift, dims=3), before_shifted, atol=1e-3)  # untiled: borders
    assert torch.equal(before, after)
    assert not torch.allclose(tiled, without_lora, atol=1e-3)  # the LoRA's convolutions took part
