"""Job bookkeeping of the pure core, against a live tiny-model server on 127.0.0.1."""
import os
import re

import pytest
from PIL import Image

from sd_blender.core.client import ServerClient, ServerError
from sd_blender.core.job import CANCELLED, DONE, FAILED, GenerationJob, unique_path
from sd_blender.core.request import GenerationSettings, build_job_request

from live_server import running_server
from waiting import wait_for


def job_request(**settings):
    return build_job_request(GenerationSettings(**{"prompt": "a red door", "width": 64, "height": 64, **settings}))


def test_a_job_writes_its_images_named_by_seed(client, tmp_path):
    job = GenerationJob(client, job_request(seed=5, steps=3, num_images=2), str(tmp_path), "shot", poll_interval=0.05)
    snapshot = job.start().wait(timeout=120)
    assert snapshot.state == DONE, snapshot.message
    assert [os.path.basename(path) for path in snapshot.result_paths] == ["shot_5.png", "shot_6.png"]
    assert (snapshot.step, snapshot.total, snapshot.fraction) == (3, 3, 1.0)
    assert snapshot.parameters["seeds"] == [5, 6]
    assert Image.open(snapshot.result_paths[0]).size == (64, 64)


def test_results_never_overwrite_earlier_files(client, tmp_path):
    (tmp_path / "shot_9.png").write_bytes(b"an earlier result")
    snapshot = GenerationJob(client, job_request(seed=9, steps=1), str(tmp_path), "shot").start().wait(120)
    assert os.path.basename(snapshot.result_paths[0]) == "shot_9_1.png"
    assert (tmp_path / "shot_9.png").read_bytes() == b"an earlier result"


def test_cancel_reaches_the_server(client, tmp_path):
    job = GenerationJob(client, job_request(steps=150), str(tmp_path), "shot", poll_interval=0.05).start()
    job.cancel()
    snapshot = job.wait(timeout=120)
    assert snapshot.state == CANCELLED and snapshot.result_paths == ()
    assert client.job(snapshot.job_id)["state"] == "cancelled"


@pytest.fixture(scope="module")
def busy_server(tiny_cache):
    """A server whose queue takes one job, kept full by two long jobs (one running, one waiting);
    yields a client and a function that ends the long jobs."""
    with running_server("--max-queue", "1", cache_dir=tiny_cache) as live:
        client = ServerClient(live.url)
        long_jobs = []

        def fill():
            long_job = {"prompt": "ahead", "width": 512, "height": 512, "steps": 150}
            long_jobs[:] = [client.submit(long_job)]
            wait_for(lambda: client.job(long_jobs[0])["state"] == "running", "the first long job running")
            long_jobs.append(client.submit(long_job))  # waits in the queue's one place

        def release():
            for job_id in long_jobs:
                client.cancel(job_id)

        yield client, fill, release


def wait_for_full_queue(job):
    wait_for(lambda: "queue is full" in job.snapshot().message, "the queue seen full")
    return job.snapshot()


def test_a_full_server_queue_is_waited_out_as_retry_after_says(busy_server, tmp_path):
    client, fill, release = busy_server
    fill()
    job = GenerationJob(client, job_request(seed=3, steps=2), str(tmp_path), "shot", poll_interval=0.05).start()
    waiting = wait_for_full_queue(job)
    assert re.fullmatch(r"the server's queue is full; trying again in \d+ s", waiting.message)
    assert waiting.job_id is None and not waiting.finished
    release()
    snapshot = job.wait(timeout=120)
    assert snapshot.state == DONE, snapshot.message
    assert [os.path.basename(path) for path in snapshot.result_paths] == ["shot_3.png"]


def test_cancel_while_waiting_for_a_place_sends_nothing(busy_server, tmp_path):
    client, fill, release = busy_server
    fill()
    job = GenerationJob(client, job_request(seed=4, steps=2), str(tmp_path), "shot", poll_interval=0.05).start()
    wait_for_full_queue(job)
    job.cancel()
    snapshot = job.wait(timeout=2)  # at once, not after the Retry-After wait
    release()
    assert snapshot.state == CANCELLED, snapshot
    assert snapshot.job_id is None and os.listdir(tmp_path) == []


def test_a_refused_request_fails_with_the_field_named(client, tmp_path):
    bad = job_request()
    bad["steps"] = 0
    snapshot = GenerationJob(client, bad, str(tmp_path), "shot").start().wait(60)
    assert snapshot.state == FAILED
    assert "422" in snapshot.message and "steps" in snapshot.message


def test_client_reads_health_and_models(client):
    assert client.health()["status"] == "ok"
    assert "depth" in {controlnet["type"] for controlnet in client.models()["controlnets"]}


def test_unknown_job_is_a_404_with_a_message(client):
    with pytest.raises(ServerError) as error:
        client.job("does-not-exist")
    assert error.value.status == 404


def test_unreachable_server_says_how_to_fix_it():
    with pytest.raises(ServerError, match="cannot reach the sd_blender server at http://127.0.0.1:9.*sd-blender-server"):
        ServerClient("http://127.0.0.1:9", timeout=2).health()


def test_unique_path_counts_up(tmp_path):
    assert unique_path(str(tmp_path), "a") == str(tmp_path / "a.png")
    (tmp_path / "a.png").touch()
    (tmp_path / "a_1.png").touch()
    assert unique_path(str(tmp_path), "a") == str(tmp_path / "a_2.png")
