"""HTTP helpers for the server tests."""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
from PIL import Image
from waiting import wait_for


def png_base64(width: int, height: int, color=(255, 255, 255), image_format: str = "PNG") -> str:
    return image_base64(Image.new("RGB", (width, height), color), image_format)


def image_base64(image: Image.Image, image_format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode()


def submit(client: httpx.Client, **body) -> str:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def read_events(client: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    """A job's event stream, read to its end (the job's final state), as (event, data) pairs."""
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    return events


def wait_finished(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {status}")


# Long enough that the queue behind it stays full while a test looks (it is cancelled after).
LONG_JOB = {"width": 512, "height": 512, "steps": 150}


def fill_queue(client: httpx.Client) -> tuple[list[str], httpx.Response]:
    """A long job seen running, then more submitted until one is refused: the queue is seen full.
    Returns their ids and the 429."""
    ids = [submit(client, **LONG_JOB)]
    wait_running(client, ids[0])
    while True:
        response = client.post("/v1/jobs", json=LONG_JOB)
        if response.status_code == 429:
            return ids, response
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])


def occupy_workers(client: httpx.Client) -> list[str]:
    """A long job seen running on each of the server's workers (its `parallel_jobs`: the replicas of
    a server on Ray Serve), so that the next job waits in the queue. Returns their ids."""
    ids = [submit(client, **LONG_JOB) for _ in range(client.get("/v1/limits").json()["parallel_jobs"])]
    for job_id in ids:
        wait_running(client, job_id)
    return ids


def started_count(client: httpx.Client, ids: list[str]) -> int:
    """How many of these jobs have left the queue (running, finished, or finished and dropped)."""
    return sum(_state(client, job_id) != "queued" for job_id in ids)


def cancel_all(client: httpx.Client, ids: list[str]) -> None:
    """Cancel these jobs and wait until each has ended."""
    for job_id in ids:
        assert client.delete(f"/v1/jobs/{job_id}").status_code in (202, 404, 409)
    for job_id in ids:
        wait_for(lambda: _state(client, job_id) in ("done", "failed", "cancelled", None), f"job {job_id} ended")


def _state(client: httpx.Client, job_id: str) -> str | None:
    """A job's state; None once it is dropped (a finished job is kept --result-ttl seconds)."""
    response = client.get(f"/v1/jobs/{job_id}")
    return None if response.status_code == 404 else response.json()["state"]


def wait_running(client: httpx.Client, job_id: str, timeout: float = 120) -> None:
    """Returns once the job is seen out of the queue (running, or already finished)."""
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/jobs/{job_id}").json()["state"] == "queued":
        assert time.monotonic() < deadline, f"job {job_id} never started"
        time.sleep(0.02)


def run_job(client: httpx.Client, **body) -> dict:
    status = wait_finished(client, submit(client, **body))
    assert status["state"] == "done", status
    return status


def fetch_image(client: httpx.Client, path: str) -> Image.Image:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def field_error(response: httpx.Response, field: str) -> str:
    """The message of a 422 about `field` (it starts with the field's path)."""
    assert response.status_code == 422, response.text
    messages = [item["msg"] for item in response.json()["detail"]]
    assert any(message.startswith(f"{field}: ") for message in messages), messages
    return next(message for message in messages if message.startswith(f"{field}: "))


def replica_healths(health: dict) -> list[dict]:
    """The health of each engine: the replicas of a server on Ray Serve, or the one process."""
    return health.get("replicas", [health])
