"""--low-vram's model CPU offload on CUDA (skipped without a GPU: offload needs CUDA): the models
sit on the CPU and each is moved to the GPU for its forward, so a job's tensors must follow the
execution device, not the models' device. A synchronized texture job runs its own denoising loop
(synchronized.py), so it is checked here against the same job without offload."""
import httpx
import numpy as np
import pytest
import torch
from live_server import running_server
from server_helpers import fetch_image, wait_finished
from test_texture_jobs import COLUMNS, correspondence, texture_job

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="model CPU offload needs CUDA")


def texture_images(tiny_cache, *flags: str) -> list[np.ndarray]:
    body = texture_job(correspondence(0, COLUMNS), correspondence(2, COLUMNS + 2), scheduler="euler", preview_every=2)
    body["views"][0]["neighbours"], body["views"][1]["neighbours"] = [1], [0]
    with running_server("--device", "cuda", "--dtype", "float32", *flags, cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            assert client.get("/health").json()["acceleration"]["cpu_offload"] == ("--low-vram" in flags)
            response = client.post("/v1/texture-jobs", json=body)
            assert response.status_code == 202, response.text
            status = wait_finished(client, response.json()["id"], timeout=600)
            assert status["state"] == "done", status["error"]
            assert status["preview_step"] == 6
            return [np.asarray(fetch_image(client, path), dtype=np.float64) for path in status["images"]]


def test_a_texture_job_under_model_cpu_offload_gives_the_images_without_it(tiny_cache):
    offloaded, resident = texture_images(tiny_cache, "--low-vram"), texture_images(tiny_cache)
    for got, want in zip(offloaded, resident):
        assert np.abs(got - want).mean() <= 0.5
