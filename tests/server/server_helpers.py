"""HTTP helpers for the server tests."""
from __future__ import annotations

import base64
import io
import time

import httpx
from PIL import Image


def png_base64(width: int, height: int, color=(255, 255, 255), image_format: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode()


def submit(client: httpx.Client, **body) -> str:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_finished(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {status}")


def run_job(client: httpx.Client, **body) -> dict:
    status = wait_finished(client, submit(client, **body))
    assert status["state"] == "done", status
    return status


def fetch_image(client: httpx.Client, path: str) -> Image.Image:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))
