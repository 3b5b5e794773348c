"""Batching: queued jobs that can share one pipeline call run as one (--max-batch images at most),
each job keeping its own state, images, parameters and previews."""
from __future__ import annotations

import base64
import dataclasses
import io
import json

import httpx
import numpy as np
import pytest
from live_server import JOB_AHEAD, running_server
from PIL import Image
from server_helpers import fetch_image, read_events, run_job, submit, wait_running
from waiting import wait_for

from sd_blender_server.batching import batch_key
from sd_blender_server.catalog import Catalog
from sd_blender_server.config import ServerConfig, controlnets_for
from sd_blender_server.engine import GenerationEngine
from sd_blender_server.jobs import JobQueue
from sd_blender_server.request import ControlInput, GenerationRequest, LoraInput
from sd_blender_server.runner import Runner

# Holds the worker while the jobs behind it queue up: it runs alone (8 images, more than any batch
# here) and is cancelled once they are queued.
JOB = {"width": 64, "height": 64, "steps": 4, "preview_every": 2}
# Three jobs alike but for their prompts, negative prompts and seeds: one batch.
ALIKE = [
    {**JOB, "prompt": "a red house", "seed": 11},
    {**JOB, "prompt": "a blue car", "negative_prompt": "blurry", "seed": 22},
    {**JOB, "prompt": "", "seed": 33},
]
# Batched images equal the images run alone but for float rounding (measured: at most 1).
TOLERANCE = 2


def start_behind_ahead(client: httpx.Client, bodies: list[dict]) -> list[str]:
    """Submit the bodies while a long job holds the worker, then cancel it: the worker takes them
    from a full queue. Their ids, in order."""
    ahead = submit(client, **JOB_AHEAD)
    wait_running(client, ahead)
    ids = [submit(client, **body) for body in bodies]
    assert client.delete(f"/v1/jobs/{ahead}").status_code == 202
    return ids


def finished(client: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["state"] in ("done", "failed", "cancelled"),
             f"job {job_id} finished", timeout)
    return client.get(f"/v1/jobs/{job_id}").json()


def pixels(client: httpx.Client, path: str) -> np.ndarray:
    return np.asarray(fetch_image(client, path), dtype=int)


@pytest.fixture(scope="module")
def batching(tiny_cache):
    with running_server("--device", "cpu", "--max-batch", "4", cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


@pytest.fixture(scope="module")
def unbatched(tiny_cache):
    with running_server("--device", "cpu", "--max-batch", "1", cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def test_limits_report_max_batch(batching, unbatched):
    assert batching.get("/v1/limits").json()["batch"] == {"max": 4}
    assert unbatched.get("/v1/limits").json()["batch"] == {"max": 1}


def test_queued_jobs_alike_run_as_one_batch_each_with_the_images_it_gives_alone(batching):
    other = {**JOB, "prompt": "a red house", "seed": 11, "steps": 5}  # another step count: runs alone
    first, incompatible, *rest = start_behind_ahead(batching, [ALIKE[0], other, *ALIKE[1:]])
    batch = [first, *rest]
    statuses = [finished(batching, job_id) for job_id in batch]
    assert [status["state"] for status in statuses] == ["done"] * 3
    assert [status["batch"] for status in statuses] == [{"jobs": 3, "images": 3}] * 3
    assert len({status["started_at"] for status in statuses}) == 1
    alone = finished(batching, incompatible)
    assert alone["state"] == "done" and alone["batch"] == {"jobs": 1, "images": 1}
    assert alone["started_at"] > statuses[0]["started_at"]  # queued before two of them, run after
    for body, status in zip(ALIKE, statuses):
        parameters = status["parameters"]
        assert (parameters["prompt"], parameters["negative_prompt"], parameters["seed"]) == (
            body["prompt"], body.get("negative_prompt", ""), body["seed"]
        )
        single = run_job(batching, **body)
        assert single["batch"] == {"jobs": 1, "images": 1}
        batched, own = pixels(batching, status["images"][0]), pixels(batching, single["images"][0])
        assert np.abs(batched - own).max() <= TOLERANCE
        # Its PNG says what it ran with: its own prompt and seed.
        written = json.loads(fetch_image(batching, status["images"][0]).text["sd_blender"])
        assert (written["prompt"], written["seed"]) == (body["prompt"], body["seed"])


def test_each_job_of_a_batch_has_its_own_progress_and_previews(batching):
    ids = start_behind_ahead(batching, ALIKE[:2])
    events = [read_events(batching, job_id) for job_id in ids]
    alone = [read_events(batching, submit(batching, **body)) for body in ALIKE[:2]]
    for job_events, single_events in zip(events, alone):
        assert [data for name, data in job_events if name == "progress"] == [
            {"step": step, "total": 4} for step in range(1, 5)
        ]
        assert job_events[-1][1]["batch"] == {"jobs": 2, "images": 2}
        previews, single = (
            [data for name, data in stream if name == "preview"] for stream in (job_events, single_events)
        )
        assert [data["step"] for data in previews] == [2]
        # The preview of the job's own image, as it previews alone.
        batched, own = (np.asarray(preview_image(data), dtype=int) for data in (previews[0], single[0]))
        assert np.abs(batched - own).max() <= TOLERANCE
    first, second = ([data for name, data in stream if name == "preview"][0] for stream in events)
    assert preview_image(first).tobytes() != preview_image(second).tobytes()


def preview_image(data: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data["image"])))


def test_cancelling_one_job_of_a_running_batch_leaves_the_others_to_finish(batching):
    long = {"width": 256, "height": 256, "steps": 150, "preview_every": 0}
    first, cancelled, last = start_behind_ahead(batching, [{**long, "seed": seed} for seed in (1, 2, 3)])
    wait_running(batching, cancelled)
    assert batching.delete(f"/v1/jobs/{cancelled}").status_code == 202
    wait_for(lambda: batching.get(f"/v1/jobs/{cancelled}").json()["state"] == "cancelled", "the job cancelled")
    assert batching.get(f"/v1/jobs/{first}").json()["state"] == "running"  # cancelled without waiting for them
    for job_id in (first, last):
        status = finished(batching, job_id)
        assert status["state"] == "done" and len(status["images"]) == 1
        assert status["batch"] == {"jobs": 3, "images": 3}
    status = batching.get(f"/v1/jobs/{cancelled}").json()
    assert status["images"] == [] and status["progress"]["step"] < 150


def test_a_batch_holds_at_most_max_batch_images(batching):
    """Three jobs alike of 2 images each with --max-batch 4: two share a call, the third runs after."""
    bodies = [{**JOB, "steps": 2, "num_images": 2, "seed": seed} for seed in (1, 2, 3)]
    statuses = [finished(batching, job_id) for job_id in start_behind_ahead(batching, bodies)]
    assert [status["batch"] for status in statuses] == [{"jobs": 2, "images": 4}] * 2 + [{"jobs": 1, "images": 2}]
    assert all(len(status["images"]) == 2 for status in statuses)
    assert statuses[2]["started_at"] > statuses[1]["started_at"]


def test_max_batch_1_never_batches(unbatched):
    statuses = [finished(unbatched, job_id) for job_id in start_behind_ahead(unbatched, ALIKE)]
    assert [(status["state"], status["batch"]) for status in statuses] == [("done", {"jobs": 1, "images": 1})] * 3
    assert len({status["started_at"] for status in statuses}) == 3


def test_a_failed_batch_fails_each_of_its_jobs_with_the_message(monkeypatch, tiny_cache):
    def run(*args, **kwargs):
        raise ValueError("something broke")

    monkeypatch.setattr(Runner, "run", run)
    config = ServerConfig(model="tiny", controlnets={}, device="cpu", cache_dir=str(tiny_cache), max_batch=4)
    jobs = JobQueue(GenerationEngine(config), config)
    ids = [jobs.submit(GenerationRequest(prompt=prompt, steps=1)).id for prompt in ("one", "two")]
    jobs.start()  # the worker finds both waiting
    wait_for(lambda: all(jobs.get(job_id).finished for job_id in ids), "both jobs finished")
    assert [(jobs.status(job_id)["state"], jobs.status(job_id)["error"]) for job_id in ids] == [
        ("failed", "ValueError: something broke")
    ] * 2
    assert [jobs.status(job_id)["batch"] for job_id in ids] == [{"jobs": 2, "images": 2}] * 2


# batch_key: what may differ between the jobs of one call, and what may not.

@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return Catalog.from_config(ServerConfig(model="tiny", controlnets=controlnets_for("tiny", []), cache_dir=str(tmp_path)))


def image(shade: int) -> Image.Image:
    return Image.new("RGB", (64, 64), (shade,) * 3)


BASE = GenerationRequest(
    prompt="a house", seed=1, width=64, height=64, init_image=image(0),
    controls=(ControlInput("depth", image(0)),), loras=(LoraInput("style", 0.5),),
)


@pytest.mark.parametrize("change", [
    {"prompt": "a car"}, {"negative_prompt": "blurry"}, {"seed": 2}, {"preview_every": 0}, {"model": "tiny"},
    {"init_image": image(200)}, {"controls": (ControlInput("depth", image(200), model="tiny"),)},
])
def test_jobs_that_differ_only_in_their_own_parts_share_a_key(catalog, change):
    assert batch_key(dataclasses.replace(BASE, **change), catalog) == batch_key(BASE, catalog)


@pytest.mark.parametrize("change", [
    {"steps": 21}, {"width": 128}, {"height": 128}, {"num_images": 2}, {"scheduler": "euler"},
    {"guidance_scale": 5.0}, {"strength": 0.5}, {"tiling": "x"}, {"guess_mode": True},
    {"loras": (LoraInput("style", 0.6),)}, {"loras": ()}, {"init_image": None},
    {"mask_image": Image.new("L", (64, 64))},
    {"controls": (ControlInput("normal", image(0)),)}, {"controls": (ControlInput("depth", image(0), weight=0.5),)},
    {"controls": (ControlInput("depth", image(0), start=0.1),)},
    {"controls": (ControlInput("depth", image(0), end=0.9),)}, {"controls": ()},
])
def test_jobs_that_differ_in_what_the_pipeline_takes_once_do_not(catalog, change):
    assert batch_key(dataclasses.replace(BASE, **change), catalog) != batch_key(BASE, catalog)


def test_for_sdxl_a_negative_prompt_given_or_not_splits_batches(catalog):
    """SDXL runs a job without a negative prompt on zero embeddings, not on the empty prompt's."""
    negative = dataclasses.replace(BASE, negative_prompt="blurry")
    assert batch_key(negative, catalog) == batch_key(BASE, catalog)
    sdxl = catalog.with_family("tiny", "sdxl")
    assert batch_key(negative, sdxl) != batch_key(BASE, sdxl)
    assert batch_key(negative, sdxl) == batch_key(dataclasses.replace(negative, negative_prompt="ugly"), sdxl)
