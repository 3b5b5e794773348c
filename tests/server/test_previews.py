"""Live previews through real HTTP against tiny-model servers: SSE `preview` events every
`preview_every` steps, GET /v1/jobs/{id}/preview, the predicted clean latent (not the noisy one)
decoded, TAESD from a models folder, frame jobs; and nothing of them left on the pipeline."""
import base64
import dataclasses
import io

import httpx
import huggingface_hub
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, LCMScheduler
from live_server import running_server
from model_builders import tiny_taesd
from PIL import Image
from server_helpers import fetch_image, read_events, run_job, submit, wait_finished

from sd_blender_server.config import ServerConfig
from sd_blender_server.engine import GenerationEngine
from sd_blender_server.errors import JobCancelled
from sd_blender_server.frame_request import FrameRequest
from sd_blender_server.previews import LinearDecoder, preview_size, recorded_steps, taesd_folder
from sd_blender_server.request import GenerationRequest
from sd_blender_server.schedulers import SCHEDULER_NAMES

JOB = {"prompt": "a red house", "seed": 7, "steps": 9, "width": 512, "height": 256, "preview_every": 3}


@pytest.fixture(scope="module")
def linear_client(tiny_cache, tmp_path_factory):
    """A server whose Hugging Face cache is empty: previews by the linear approximation."""
    env = {"HF_HUB_CACHE": str(tmp_path_factory.mktemp("empty_hub"))}
    with running_server("--device", "cpu", cache_dir=tiny_cache, env=env) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


@pytest.fixture(scope="module")
def taesd_client(tiny_cache, tmp_path_factory):
    """A server with a random tiny TAESD in its models folder."""
    models = tmp_path_factory.mktemp("taesd_models")
    tiny_taesd(models / "taesd")
    env = {"HF_HUB_CACHE": str(tmp_path_factory.mktemp("empty_hub"))}
    with running_server("--device", "cpu", "--models-dir", str(models), cache_dir=tiny_cache, env=env) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def previews_of(events: list[tuple[str, dict]]) -> list[dict]:
    return [data for name, data in events if name == "preview"]


def png(data: dict) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data["image"])))
    assert image.format == "PNG"
    return image


def test_previews_arrive_every_few_steps_small_and_stop_before_the_end(linear_client):
    job_id = submit(linear_client, **JOB)
    events = read_events(linear_client, job_id)
    previews = previews_of(events)
    assert [(data["step"], data["total"]) for data in previews] == [(3, 9), (6, 9)]
    for data in previews:
        assert (data["width"], data["height"]) == (256, 128)
        assert png(data).size == (256, 128) and png(data).mode == "RGB"
    last_preview = max(index for index, (name, _) in enumerate(events) if name == "preview")
    progress_after = [data["step"] for name, data in events[last_preview:] if name == "progress"]
    assert progress_after == [7, 8, 9]
    assert events[-1][0] == "state" and events[-1][1]["state"] == "done"
    assert events[-1][1]["parameters"]["preview_decoder"] == "linear"


def test_the_preview_route_serves_the_latest_and_the_status_names_its_step(linear_client):
    status = run_job(linear_client, **JOB)
    assert status["preview_step"] == 6
    response = linear_client.get(f"/v1/jobs/{status['id']}/preview")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-preview-step"] == str(status["preview_step"])
    assert response.headers["x-preview-total"] == "9"
    assert Image.open(io.BytesIO(response.content)).size == (256, 128)
    assert linear_client.get("/v1/jobs/unknown/preview").status_code == 404


def test_previews_off_send_none_and_the_route_answers_204(linear_client):
    status = run_job(linear_client, **{**JOB, "preview_every": 0})
    assert status["preview_step"] is None and status["parameters"]["preview_every"] == 0
    assert previews_of(read_events(linear_client, status["id"])) == []
    response = linear_client.get(f"/v1/jobs/{status['id']}/preview")
    assert response.status_code == 204 and response.content == b""


def test_a_queued_job_has_no_preview_yet(linear_client):
    running = submit(linear_client, **{**JOB, "steps": 30})
    queued = submit(linear_client, **JOB)
    assert linear_client.get(f"/v1/jobs/{queued}/preview").status_code == 204
    for job_id in (running, queued):
        linear_client.delete(f"/v1/jobs/{job_id}")
        wait_finished(linear_client, job_id)


@pytest.mark.parametrize("every", [-1, 151, "x"])
def test_a_bad_preview_every_is_a_422(linear_client, every):
    response = linear_client.post("/v1/jobs", json={**JOB, "preview_every": every})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "preview_every"]


def test_previews_change_nothing_in_the_images_nor_after_them(linear_client):
    def image(every: int) -> bytes:
        status = run_job(linear_client, **{**JOB, "preview_every": every})
        return fetch_image(linear_client, status["images"][0]).tobytes()

    before = image(0)
    assert image(2) == before
    assert image(0) == before


@pytest.fixture(scope="module")
def engine(tiny_cache):
    return GenerationEngine(ServerConfig(model="tiny", device="cpu", cache_dir=str(tiny_cache), controlnets={}))


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_scheduler_previews_each_step_but_the_last_and_its_image_is_unchanged(engine, scheduler):
    request = GenerationRequest(seed=3, steps=3, width=64, height=64, scheduler=scheduler, preview_every=1)
    previews = []
    result = engine.generate(request, on_preview=lambda step, total, image: previews.append((step, total, image.size)))
    total = previews[0][1]
    assert previews == [(step, total, (64, 64)) for step in range(1, total)]
    plain = engine.generate(GenerationRequest(**{**vars(request), "preview_every": 0}))
    assert result.images[0].tobytes() == plain.images[0].tobytes()


def test_an_lcm_steps_clean_latent_is_its_denoised_sample():
    """LCM's x0 mixes the model's prediction with the sample (its boundary condition): the step's
    `denoised`, which at the last step is the result itself."""
    scheduler = LCMScheduler(timestep_scaling=0.001)  # a boundary condition that shows at every step
    scheduler.set_timesteps(4)
    sample, noise = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with recorded_steps(scheduler) as latents:
        for timestep in scheduler.timesteps:
            output = scheduler.step(noise, timestep, sample, generator=torch.Generator().manual_seed(1))
            torch.testing.assert_close(latents(), output.denoised, rtol=0, atol=0)
            assert not torch.allclose(latents(), (sample - (1 - scheduler.alphas_cumprod[timestep]).sqrt() * noise)
                                      / scheduler.alphas_cumprod[timestep].sqrt())
            sample = output.prev_sample
    torch.testing.assert_close(latents(), sample, rtol=0, atol=0)


def test_the_step_wrapper_is_gone_after_its_block_even_when_the_job_fails():
    scheduler = EulerDiscreteScheduler()
    with pytest.raises(JobCancelled), recorded_steps(scheduler):
        assert "step" in vars(scheduler)
        raise JobCancelled()
    assert "step" not in vars(scheduler)


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_the_preview_is_the_predicted_clean_latent_not_the_noisy_one(engine, scheduler):
    """Late in the job the preview is close to the final latent's decoding (the same linear
    approximation), far closer than the noisy latent of that step decodes to."""
    request = GenerationRequest(prompt="a red house", seed=7, steps=12, width=256, height=128, preview_every=9)
    request = GenerationRequest(**{**vars(request), "scheduler": scheduler})
    previews = []
    engine.generate(request, on_preview=lambda step, total, image: previews.append((step, image)))
    ((step, preview),) = previews
    assert step == 9
    noisy = {}

    def keep_noisy(pipeline, index, timestep, tensors):
        if index + 1 == step:
            noisy["latent"] = tensors["latents"][0].clone()
        return tensors

    runner = engine._runner
    plan = engine._plan(request)
    with runner.pipeline_for(request, plan) as (pipeline, _), torch.inference_mode():
        final = pipeline(
            prompt=[request.prompt], num_inference_steps=request.steps, width=request.width, height=request.height,
            generator=[torch.Generator("cpu").manual_seed(request.seed)], output_type="latent",
            callback_on_step_end=keep_noisy,
        ).images[0]
    decoder, size = LinearDecoder("sd15"), preview_size(request.width, request.height)

    def distance(image: Image.Image, latent: torch.Tensor) -> float:
        other = np.asarray(decoder.image(latent, size), dtype=float)
        return float(np.abs(np.asarray(image, dtype=float) - other).mean())

    to_final = distance(preview, final)
    assert to_final < 0.5 * distance(decoder.image(noisy["latent"], size), final), to_final


def test_previews_come_from_taesd_when_a_models_folder_has_it(taesd_client, linear_client):
    taesd_events = read_events(taesd_client, submit(taesd_client, **JOB))
    linear_events = read_events(linear_client, submit(linear_client, **JOB))
    assert taesd_events[-1][1]["parameters"]["preview_decoder"] == "taesd"
    assert taesd_client.get(f"/v1/jobs/{taesd_events[-1][1]['id']}").json()["parameters"]["preview_decoder"] == "taesd"
    taesd, linear = previews_of(taesd_events), previews_of(linear_events)
    assert [data["step"] for data in taesd] == [3, 6]
    assert png(taesd[-1]).size == (256, 128)
    assert png(taesd[-1]).tobytes() != png(linear[-1]).tobytes()


def test_frame_jobs_send_previews_of_their_first_frame(linear_client):
    frame = {"control_images": [], "init_image": None}
    body = {"prompt": "a walk", "seed": 5, "steps": 4, "width": 128, "height": 64, "preview_every": 2,
            "frames": [frame, frame], "anchor": frame}
    response = linear_client.post("/v1/frame-jobs", json=body)
    assert response.status_code == 202, response.text
    events = read_events(linear_client, response.json()["id"])
    previews = previews_of(events)
    assert [(data["step"], data["width"], data["height"]) for data in previews] == [(2, 128, 64)]
    assert events[-1][1]["state"] == "done" and events[-1][1]["parameters"]["preview_every"] == 2


def taesd_files(folder) -> None:
    folder.mkdir(parents=True)
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        (folder / name).write_text("{}")


def test_taesd_is_looked_for_in_the_models_folders_then_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert taesd_folder("sdxl", ()) is None
    repo = tmp_path / "hub" / "models--madebyollin--taesdxl"
    taesd_files(repo / "snapshots" / "abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    assert taesd_folder("sdxl", ()) == repo / "snapshots" / "abc"
    assert taesd_folder("sd15", ()) is None
    comfy = tmp_path / "ComfyUI"
    taesd_files(comfy / "models" / "vae_approx" / "taesdxl")
    assert taesd_folder("sdxl", (str(comfy),)) == comfy / "models" / "vae_approx" / "taesdxl"


def test_a_frame_jobs_previews_show_its_first_frame_not_the_anchor(engine):
    """A dark first frame and a light anchor (img2img): the job's preview is the dark frame's (close
    to what it previews alone), not the anchor's."""
    settings = GenerationRequest(prompt="a walk", seed=5, steps=4, width=64, height=64, strength=0.8, preview_every=2)
    frame, anchor = (
        dataclasses.replace(settings, init_image=Image.new("RGB", (64, 64), (shade,) * 3)) for shade in (20, 235)
    )

    def preview_of(request) -> np.ndarray:
        previews = []
        engine.generate(request, on_preview=lambda step, total, image: previews.append(image))
        return np.asarray(previews[-1], dtype=float)

    job = preview_of(FrameRequest(frames=(frame,), anchor=anchor))
    to_frame, to_anchor = (np.abs(job - preview_of(alone)).mean() for alone in (frame, anchor))
    assert to_frame < 0.25 * to_anchor, (to_frame, to_anchor)
