"""A server that dies or restarts mid-job: the job says so clearly, writes nothing half, and a
resubmit works. Real server processes on 127.0.0.1, killed for real."""
from urllib.parse import urlparse

from live_server import running_server
from sd_blender.core.client import ServerClient
from sd_blender.core.job import DONE, FAILED, RUNNING, GenerationJob
from sd_blender.core.request import GenerationSettings, build_job_request
from waiting import wait_for

LONG_JOB = build_job_request(GenerationSettings(prompt="slow", width=256, height=256, steps=150, seed=1))
SHORT_JOB = build_job_request(GenerationSettings(prompt="quick", width=64, height=64, steps=2, seed=1))


def running_job(client, output_dir, reconnect_grace):
    job = GenerationJob(client, LONG_JOB, str(output_dir), "shot", poll_interval=0.05,
                        reconnect_grace=reconnect_grace).start()
    wait_for(lambda: job.snapshot().state == RUNNING, "the job running")
    return job


def test_a_server_killed_mid_job_is_reported_and_a_resubmit_works(tiny_cache, tmp_path):
    with running_server(cache_dir=tiny_cache) as live:
        client = ServerClient(live.url)
        job = running_job(client, tmp_path, reconnect_grace=1.0)
        live.process.kill()
        snapshot = job.wait(timeout=30)
    assert snapshot.state == FAILED
    assert snapshot.message.startswith(f"lost the sd_blender server at {live.url} during the job")
    assert snapshot.message.endswith("Start it again, then press Generate.")
    assert list(tmp_path.iterdir()) == []  # nothing half-written

    with running_server(cache_dir=tiny_cache, port=urlparse(live.url).port):
        retried = GenerationJob(client, SHORT_JOB, str(tmp_path), "shot", poll_interval=0.05).start().wait(120)
    assert retried.state == DONE, retried.message
    assert [path.name for path in tmp_path.iterdir()] == ["shot_1.png"]


def test_a_restarted_server_that_lost_the_job_says_so(tiny_cache, tmp_path):
    with running_server(cache_dir=tiny_cache) as live:
        job = running_job(ServerClient(live.url), tmp_path, reconnect_grace=120.0)
        live.process.kill()
        wait_for(lambda: "the server is not answering; retrying" in job.snapshot().message, "the job retrying")
        with running_server(cache_dir=tiny_cache, port=urlparse(live.url).port):
            snapshot = job.wait(timeout=60)
    assert snapshot.state == FAILED
    assert snapshot.message == (
        "the server no longer knows this job: it was restarted, or the result expired. To generate it again, press Generate."
    )
