"""A job's status says where its time went (`timings`, milliseconds, measured by the server): the
body's parsing, validation, image decoding, the queue, generation and PNG encoding, and the total."""
import numpy as np
from PIL import Image
from server_helpers import fetch_image, image_base64, occupy_workers, read_events, run_job, submit, wait_finished

PARTS = ("parsing", "validation", "decoding", "queued", "generation", "encoding")
NOISE = image_base64(Image.fromarray(np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)))
IMAGE_JOB = {
    "prompt": "a house", "width": 64, "height": 64, "steps": 2, "init_image": NOISE, "strength": 1.0,
    "controls": [{"type": "depth", "image": NOISE}],
}


def test_a_finished_job_has_every_part_and_they_add_up_to_at_most_its_total(client):
    timings = run_job(client, **IMAGE_JOB)["timings"]
    assert all(timings[part] is not None and timings[part] >= 0 for part in PARTS), timings
    assert timings["decoding"] > 0 and timings["generation"] > 0 and timings["encoding"] > 0, timings
    # Each part is its own stretch of the job's life, so together they fit in the total (rounded to µs).
    assert sum(timings[part] for part in PARTS) <= timings["total"] + 0.01, timings


def test_answering_and_sending_the_images_are_measured_too(client):
    status = run_job(client, prompt="a house", width=64, height=64, steps=1, num_images=2)
    assert status["timings"]["answer"] >= 0 and status["timings"]["download"] is None  # no image fetched yet
    fetch_image(client, status["images"][0])
    one = client.get(f"/v1/jobs/{status['id']}").json()["timings"]["download"]
    fetch_image(client, status["images"][1])
    both = client.get(f"/v1/jobs/{status['id']}").json()["timings"]["download"]
    assert 0 < one < both  # each image request adds its time


def test_a_job_without_input_images_decodes_nothing(client):
    assert run_job(client, prompt="a house", width=64, height=64, steps=1)["timings"]["decoding"] == 0


def test_a_queued_job_has_only_its_submission_parts_and_one_cancelled_there_never_generated(client):
    ahead = occupy_workers(client)
    waiting = submit(client, **IMAGE_JOB)
    queued = client.get(f"/v1/jobs/{waiting}").json()
    assert queued["state"] == "queued"
    assert queued["timings"]["decoding"] > 0
    assert {part: queued["timings"][part] for part in ("queued", "generation", "encoding", "total")} == dict.fromkeys(
        ("queued", "generation", "encoding", "total")
    )
    for job in (waiting, *ahead):
        assert client.delete(f"/v1/jobs/{job}").status_code == 202
    cancelled = wait_finished(client, waiting)["timings"]
    assert cancelled["total"] is not None and cancelled["queued"] is None and cancelled["generation"] is None
    assert {wait_finished(client, job)["state"] for job in ahead} == {"cancelled"}


def test_the_final_state_event_carries_the_timings(client):
    events = read_events(client, submit(client, prompt="a house", width=64, height=64, steps=1))
    name, final = events[-1]
    assert (name, final["state"]) == ("state", "done")
    assert final["timings"]["total"] is not None and final["timings"]["encoding"] > 0
