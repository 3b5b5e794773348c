"""Jobs through real HTTP against a live server running the tiny model."""
import json
import time

from sd_parsers import ParserManager
from sd_parsers.data import Generators
from server_helpers import (
    cancel_all, fetch_image, occupy_workers, png_base64, read_events, replica_healths, run_job, submit, wait_finished,
)


def test_submit_poll_done_with_progress_and_image(client):
    response = client.post("/v1/jobs", json={"prompt": "a red cube", "width": 320, "height": 256, "steps": 6})
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"

    status = wait_finished(client, job_id)
    assert status["state"] == "done"
    assert status["error"] is None
    assert status["progress"] == {"step": 6, "total": 6}
    assert status["images"] == [f"/v1/jobs/{job_id}/images/0.png"]
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]
    parameters = status["parameters"]
    assert parameters["prompt"] == "a red cube"
    assert (parameters["width"], parameters["height"], parameters["steps"]) == (320, 256, 6)
    assert parameters["scheduler"] == "unipc" and parameters["model"] == "tiny"

    image = fetch_image(client, status["images"][0])
    assert image.size == (320, 256)
    text = image.text["parameters"]
    assert text.startswith("a red cube\nSteps: 6, Sampler: UniPC, CFG scale: 7.5, ")  # no negative prompt: no line
    assert f"Seed: {parameters['seed']}, Size: 320x256, Model: tiny" in text
    embedded = json.loads(image.text["sd_blender"])
    assert embedded["seed"] == parameters["seed"] and embedded["image_index"] == 0


def test_same_seed_gives_same_pixels_and_null_seed_is_reported(client):
    body = {"prompt": "seeded", "width": 64, "height": 64, "steps": 4}
    first = run_job(client, seed=1234, **body)
    again = run_job(client, seed=1234, **body)
    other = run_job(client, seed=1235, **body)
    pixels = [fetch_image(client, status["images"][0]).tobytes() for status in (first, again, other)]
    assert pixels[0] == pixels[1]
    assert pixels[0] != pixels[2]

    random_seed = run_job(client, seed=None, num_images=2, **body)
    seed = random_seed["parameters"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert random_seed["parameters"]["seeds"] == [seed, seed + 1]
    assert len(random_seed["images"]) == 2
    second = fetch_image(client, random_seed["images"][1])
    assert f"Seed: {seed + 1}," in second.text["parameters"]


def test_events_stream_every_step_then_the_final_state(client):
    job_id = submit(client, width=64, height=64, steps=12)
    events = read_events(client, job_id)

    progress = [data for name, data in events if name == "progress"]
    assert progress == [{"step": step, "total": 12} for step in range(1, 13)]
    states = [data["state"] for name, data in events if name == "state"]
    assert states[-2:] == ["running", "done"]
    assert events[-1][1]["images"] == [f"/v1/jobs/{job_id}/images/0.png"]
    # A client that connects after the end still gets the whole story, but for the previews: the
    # latest alone is kept (test_previews.py).
    late = read_events(client, job_id)
    assert [event for event in late if event[0] != "preview"] == [event for event in events if event[0] != "preview"]
    assert [data["step"] for name, data in late if name == "preview"] == [9]


def test_cancel_a_queued_and_a_running_job(client):
    running_id, *others = occupy_workers(client)
    queued_id = submit(client, width=64, height=64, steps=2)

    cancelled = client.delete(f"/v1/jobs/{queued_id}")
    assert cancelled.status_code == 202
    assert cancelled.json()["state"] == "cancelled"

    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{running_id}").json()["progress"]["step"] < 1:
        assert time.monotonic() < deadline, "the long job never started"
        time.sleep(0.05)
    assert client.delete(f"/v1/jobs/{running_id}").status_code == 202
    status = wait_finished(client, running_id)
    assert status["state"] == "cancelled"
    assert status["progress"]["step"] < 150
    assert status["images"] == []
    assert client.get(f"/v1/jobs/{queued_id}").json()["started_at"] is None

    again = client.delete(f"/v1/jobs/{running_id}")
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]
    cancel_all(client, others)
    # The worker goes on serving after a cancellation.
    run_job(client, width=64, height=64, steps=2)


def test_two_controlnets_in_one_job(client):
    status = run_job(
        client,
        width=128,
        height=128,
        steps=4,
        controls=[
            {"type": "depth", "image": png_base64(128, 128, (200, 200, 200))},
            {"type": "normal", "image": png_base64(96, 64, (128, 128, 255)), "weight": 0.5, "start": 0.2, "end": 0.8},
        ],
    )
    controls = status["parameters"]["controls"]
    assert controls == [
        {"type": "depth", "model": "tiny", "weight": 1.0, "start": 0.0, "end": 1.0},
        {"type": "normal", "model": "tiny", "weight": 0.5, "start": 0.2, "end": 0.8},
    ]
    text = fetch_image(client, status["images"][0]).text["parameters"]
    assert 'ControlNet 1: "Module: normal, Model: tiny, Weight: 0.5, Guidance Start: 0.2, Guidance End: 0.8"' in text


def test_a_control_names_its_controlnet_and_guess_mode_changes_the_image(client):
    control = {"type": "scribble", "model": "tiny", "image": png_base64(64, 64, (255, 255, 255))}
    body = {"width": 64, "height": 64, "steps": 3, "seed": 5, "controls": [control]}
    plain = run_job(client, **body)
    guessed = run_job(client, guess_mode=True, **body)
    assert plain["parameters"]["controls"][0]["model"] == "tiny"
    assert (plain["parameters"]["guess_mode"], guessed["parameters"]["guess_mode"]) == (False, True)
    images = [fetch_image(client, status["images"][0]).tobytes() for status in (plain, guessed)]
    assert images[0] != images[1]


def test_img2img_runs_strength_times_steps(client):
    status = run_job(
        client,
        width=128,
        height=96,
        steps=10,
        strength=0.5,
        init_image=png_base64(200, 150, (255, 0, 0), image_format="JPEG"),
        controls=[{"type": "lineart", "image": png_base64(128, 96)}],
    )
    assert status["parameters"]["strength"] == 0.5
    assert status["progress"] == {"step": 5, "total": 5}
    image = fetch_image(client, status["images"][0])
    assert image.size == (128, 96)
    assert "Denoising strength: 0.5" in image.text["parameters"]


def test_base_model_is_reused_when_only_controlnets_change(client):
    for control_type in ("depth", "openpose", "depth"):
        run_job(client, width=64, height=64, steps=2, controls=[{"type": control_type, "image": png_base64(64, 64)}])
    health = client.get("/health").json()
    for replica in replica_healths(health):  # the jobs may have run on any replica of a cluster
        assert replica["load_counts"]["base_model"] == 1
        assert set(replica["load_counts"]["controlnets"].values()) <= {1}
    assert {"depth", "openpose"} <= set(health["loaded"]["controlnets"])


def test_health_and_models_describe_the_server(client):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert (health["device"], health["dtype"], health["model"]) == ("cpu", "float32", "tiny")
    assert health["loaded"]["base_model"] is True
    assert isinstance(health["queue_length"], int)

    models = client.get("/v1/models").json()
    assert [model["name"] for model in models["base_models"]] == ["tiny"]
    assert sorted(item["type"] for item in models["controlnets"]) == [
        "canny", "depth", "lineart", "normal", "openpose", "seg", "tile"
    ]
    assert "unipc" in models["schedulers"] and "dpmpp_2m_karras" in models["schedulers"]


def test_limits_are_the_defaults_of_a_server_started_without_flags(client):
    limits = client.get("/v1/limits").json()
    assert (limits["max_pixels"], limits["max_queue"], limits["job_timeout_s"], limits["max_body_mb"]) == (
        2048 * 2048, 32, 600.0, 64.0
    )
    assert limits["schedulers"] == client.get("/v1/models").json()["schedulers"]


def test_every_scheduler_runs(client):
    schedulers = client.get("/v1/models").json()["schedulers"]
    ids = {name: submit(client, width=64, height=64, steps=3, scheduler=name, seed=7) for name in schedulers}
    pixels = {}
    for name, job_id in ids.items():
        status = wait_finished(client, job_id)
        assert status["state"] == "done", (name, status["error"])
        pixels[name] = fetch_image(client, status["images"][0]).tobytes()
    assert len(set(pixels.values())) > 1



def test_png_metadata_is_read_by_an_a1111_metadata_reader(client):
    """sd-parsers (PyPI), a reader of AUTOMATIC1111/ComfyUI/InvokeAI image metadata, reads our PNGs."""
    status = run_job(client, prompt="a cabin", negative_prompt="blurry", width=64, height=64, steps=2, seed=5)
    image = fetch_image(client, status["images"][0])
    assert image.text["parameters"].splitlines()[:2] == ["a cabin", "Negative prompt: blurry"]
    info = ParserManager().parse(image)
    assert info.generator == Generators.AUTOMATIC1111
    (sampler,) = info.samplers
    assert sampler.name == "UniPC"
    assert sampler.parameters == {"cfg_scale": "7.5", "seed": "5", "steps": "2"}
    assert sampler.model.name == "tiny"
    assert [prompt.value for prompt in sampler.prompts] == ["a cabin"]
    assert [prompt.value for prompt in sampler.negative_prompts] == ["blurry"]
    assert info.metadata["Size"] == "64x64"
