"""The few-step schedulers `lcm` and `tcd` (for LCM-LoRA, Hyper-SD and TCD LoRAs): every kind of
job runs with them through real HTTP against the live tiny-model server, they take at most the 50
steps they pick theirs from, and TCD runs with gamma (eta) 0.3."""
import base64

import numpy as np
import pytest
import torch
from PIL import Image
from server_helpers import fetch_image, field_error, image_base64, png_base64, run_job, submit, wait_finished

from sd_blender_server.config import ServerConfig
from sd_blender_server.engine import GenerationEngine
from sd_blender_server.request import GenerationRequest

FEW_STEP = ["lcm", "tcd"]
JOB = {"prompt": "a crate", "seed": 3, "steps": 4, "guidance_scale": 1.5, "width": 64, "height": 64}


def noise_png(seed: int, width: int = 64, height: int = 64) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image_base64(Image.fromarray(pixels))


def test_a_4_step_lcm_job_gives_a_finished_image(client):
    status = run_job(client, **JOB, scheduler="lcm")
    image = fetch_image(client, status["images"][0])
    assert status["state"] == "done" and image.size == (64, 64)
    assert np.asarray(image).std() > 1  # not a flat image
    assert "Steps: 4, Sampler: LCM, CFG scale: 1.5" in image.text["parameters"]


@pytest.mark.parametrize("scheduler", FEW_STEP)
def test_few_step_schedulers_run_ordinary_jobs_of_every_kind(client, scheduler):
    control = {"type": "depth", "image": noise_png(1), "end": 0.5}
    mask = png_base64(64, 64, (255, 255, 255))
    kinds = {
        "txt2img with a control": {"controls": [control]},
        "img2img": {"init_image": noise_png(2), "strength": 0.5},
        "inpainting with a control": {"init_image": noise_png(2), "mask_image": mask, "strength": 0.8, "controls": [control]},
    }
    ids = {kind: submit(client, **JOB, **body, scheduler=scheduler) for kind, body in kinds.items()}
    for kind, job_id in ids.items():
        status = wait_finished(client, job_id)
        assert status["state"] == "done", (kind, status["error"])
        assert status["parameters"]["scheduler"] == scheduler


@pytest.mark.parametrize("scheduler", FEW_STEP)
def test_few_step_schedulers_run_frame_and_texture_jobs(client, scheduler):
    frame = {"control_images": [noise_png(1)], "init_image": noise_png(2)}
    frames = {**JOB, "scheduler": scheduler, "strength": 0.6, "controls": [{"type": "depth"}],
              "frames": [frame, frame], "anchor": frame}
    response = client.post("/v1/frame-jobs", json=frames)
    assert response.status_code == 202, response.text
    assert wait_finished(client, response.json()["id"])["state"] == "done"

    rows, columns = np.mgrid[0:8, 0:8]  # each latent pixel sees its own texel of a 16x16 texture
    correspondence = np.stack([(columns + 0.5) / 16, 1 - (rows + 0.5) / 16, np.full((8, 8), 0.8)], -1).astype("<f4")
    view = {"controls": [{"type": "depth", "image": noise_png(1)}],
            "correspondence": base64.b64encode(correspondence.tobytes()).decode()}
    texture = {**JOB, "scheduler": scheduler, "texture_size": 16, "views": [view, view]}
    response = client.post("/v1/texture-jobs", json=texture)
    assert response.status_code == 202, response.text
    status = wait_finished(client, response.json()["id"])
    assert status["state"] == "done", status["error"]
    first, second = (np.asarray(fetch_image(client, path), dtype=np.int16) for path in status["images"])
    assert np.abs(first - second).max() <= 1  # two views seeing the same texels agree


@pytest.mark.parametrize("scheduler", FEW_STEP)
def test_more_steps_than_their_schedule_is_a_422_naming_steps(client, scheduler):
    response = client.post("/v1/jobs", json={**JOB, "scheduler": scheduler, "steps": 51})
    assert "takes at most 50 steps" in field_error(response, "steps")
    assert run_job(client, **{**JOB, "scheduler": scheduler, "steps": 50})["state"] == "done"


def test_tcd_runs_with_gamma_0_3(tiny_cache):
    """The job's image is the stock pipeline's with eta 0.3, not the pipelines' default 0."""
    engine = GenerationEngine(ServerConfig(model="tiny", device="cpu", cache_dir=str(tiny_cache), controlnets={}))
    request = GenerationRequest(prompt="a crate", seed=3, steps=4, guidance_scale=1.5, width=64, height=64,
                                scheduler="tcd", preview_every=0)
    job = np.asarray(engine.generate(request).images[0])

    def stock(eta: float) -> np.ndarray:
        with engine._runner.pipeline_for(request, engine._plan(request)) as (pipeline, _), torch.inference_mode():
            image = pipeline(
                prompt=[request.prompt], num_inference_steps=4, guidance_scale=1.5, width=64, height=64, eta=eta,
                generator=[torch.Generator("cpu").manual_seed(request.seed)],
            ).images[0]
        return np.asarray(image)

    assert np.array_equal(job, stock(0.3))
    assert not np.array_equal(job, stock(0.0))
