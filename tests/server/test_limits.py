"""Limits a client meets: queue (429), job time, body size (413), pixels, image bombs, result retention."""
import base64
import io
import struct
import threading
import time
import zlib

import httpx
import psutil
import pytest
import torch
from live_server import running_server
from PIL import Image
from sd_blender_server.config import ServerConfig
from sd_blender_server.engine import GenerationEngine, GenerationResult
from sd_blender_server.errors import GenerationFailed, OutOfMemory
from sd_blender_server.jobs import JobQueue
from sd_blender_server.request import GenerationRequest
from sd_blender_server.runner import Runner
from server_helpers import (
    LONG_JOB,
    cancel_all,
    fetch_image,
    fill_queue,
    png_base64,
    run_job,
    started_count,
    submit,
    wait_finished,
)
from waiting import wait_for


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int) -> str:
    """A real 1-bit grey PNG of side x side black pixels: a few KB that decode to side² pixels."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    data = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def _messages(response: httpx.Response) -> list[str]:
    return [item["msg"] for item in response.json()["detail"]]


@pytest.fixture(scope="module")
def limited(tiny_cache):
    with running_server(
        "--max-queue", "1", "--job-timeout", "2", "--max-body-mb", "1", "--max-pixels", str(512 * 512),
        cache_dir=tiny_cache,
    ) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def test_full_queue_is_429_with_retry_after(limited):
    accepted, refused = fill_queue(limited)
    assert len(accepted) >= 2  # one seen running, one waiting (more if a job ended meanwhile)
    assert refused.json()["detail"] == (
        "the queue is full (1 jobs waiting, the server's --max-queue); try again later"
    )
    assert 1 <= int(refused.headers["retry-after"]) <= 2  # the running job's time left, capped by its time limit
    cancel_all(limited, accepted)
    assert limited.get("/health").json()["queue_length"] == 0
    again = submit(limited, width=64, height=64, steps=1)  # a place is free again
    limited.delete(f"/v1/jobs/{again}")


@pytest.fixture(scope="module")
def no_time(tiny_cache):
    """A time limit every job passes, on any machine: it is checked before the first step too."""
    with running_server("--job-timeout", "0.001", cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def test_job_past_the_time_limit_is_failed_with_the_limit(no_time):
    for _ in range(2):  # the worker goes on after a job it stopped
        status = wait_finished(no_time, submit(no_time, **LONG_JOB))
        assert status["state"] == "failed"
        assert status["error"].endswith("the job ran past this server's time limit of 0.001 s (--job-timeout)")
        assert status["error"].startswith(f"stopped after {status['progress']['step']} of 150 steps")
        assert status["progress"]["step"] < 150 and status["images"] == []


def test_body_too_large_is_413(limited):
    big = {"width": 64, "height": 64, "controls": [{"type": "depth", "image": "A" * (2 * 2**20)}]}
    response = limited.post("/v1/jobs", json=big)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body too large: this server accepts at most 1 MB (--max-body-mb)"}

    def chunks():  # no Content-Length: chunked transfer encoding
        for _ in range(40):
            yield b" " * 65536

    chunked = limited.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert limited.request("GET", "/health", content=b" " * (2 * 2**20)).status_code == 413  # every route
    # Just under the limit is read and validated as usual.
    small = limited.post("/v1/jobs", json={"width": 64, "height": 64, "prompt": "x" * 5000, "negative_prompt": " " * 900_000})
    assert small.status_code == 422
    assert limited.get("/health").status_code == 200


def test_more_pixels_than_max_pixels_is_422_naming_height(limited):
    response = limited.post("/v1/jobs", json={"width": 1024, "height": 512})
    assert response.status_code == 422
    assert "height: 1024x512 is 524288 pixels; this server's maximum is 262144 (width x height)" in _messages(response)
    assert limited.post("/v1/jobs", json={"width": 512, "height": 512, "steps": 1}).status_code == 202


def test_a_defaulted_height_counts_against_max_pixels(limited):
    response = limited.post("/v1/jobs", json={"width": 2048})
    assert response.status_code == 422
    assert _messages(response) == ["width: 2048x512 is 1048576 pixels; this server's maximum is 262144 (width x height)"]
    response = limited.post("/v1/jobs", json={"height": 1024})
    assert _messages(response) == ["height: 512x1024 is 524288 pixels; this server's maximum is 262144 (width x height)"]


@pytest.fixture(scope="module")
def small_images(tiny_cache):
    with running_server("--max-pixels", str(256 * 256), cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def test_the_default_size_counts_against_max_pixels(small_images):
    response = small_images.post("/v1/jobs", json={})
    assert response.status_code == 422
    assert _messages(response) == ["height: 512x512 is 262144 pixels; this server's maximum is 65536 (width x height)"]
    accepted = small_images.post("/v1/jobs", json={"width": 256, "height": 256, "steps": 1})
    assert accepted.status_code == 202


def test_input_image_over_the_decode_limit_is_422(limited):
    # 4 x --max-pixels = 1048576: an image a little over is refused from its header.
    over = png_base64(1100, 1000)
    response = limited.post("/v1/jobs", json={"width": 64, "height": 64, "init_image": over})
    assert response.status_code == 422
    assert _messages(response) == [
        "init_image: is 1100x1000 pixels (1100000); this server decodes images of at most 1048576 pixels"
    ]


def test_decompression_bomb_is_refused_from_its_header_naming_the_field(server, client):
    bomb = bomb_png(30000)  # 900 megapixels: 900 MB decoded, 2.7 GB as RGB
    assert len(bomb) < 200_000
    memory = psutil.Process(server.process.pid)
    before = memory.memory_info().rss
    for body, field in [
        ({"controls": [{"type": "depth", "image": bomb}]}, "controls[0].image"),
        ({"init_image": "data:image/png;base64," + bomb}, "init_image"),
    ]:
        response = client.post("/v1/jobs", json={"width": 64, "height": 64, **body})
        assert response.status_code == 422, response.text
        # Its size, read from the header; decoding it would have taken hundreds of MB.
        assert _messages(response) == [
            f"{field}: is 30000x30000 pixels (900000000); this server decodes images of at most 16777216 pixels"
        ]
    assert memory.memory_info().rss - before < 200 * 2**20


def _encoded(image: Image.Image, image_format: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_of_other_sizes_and_modes_are_stretched_to_the_job_size(client):
    inputs = [
        _encoded(Image.new("I;16", (96, 64), 40000), "PNG"),
        _encoded(Image.new("RGBA", (40, 200), (1, 2, 3, 4)), "PNG"),
        _encoded(Image.new("P", (64, 64)), "PNG"),
        _encoded(Image.new("L", (300, 100), 128), "JPEG"),
    ]
    status = run_job(
        client, width=128, height=64, steps=2, init_image=_encoded(Image.new("CMYK", (50, 50)), "JPEG"),
        controls=[{"type": "depth", "image": image} for image in inputs],
    )
    assert fetch_image(client, status["images"][0]).size == (128, 64)


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (png_base64(64, 64)[:120], "is not a readable PNG or JPEG file"),
        (png_base64(8, 8, image_format="BMP"), "is a BMP file; send PNG or JPEG"),
        (png_base64(8, 8, image_format="WEBP"), "is a WEBP file; send PNG or JPEG"),
    ],
)
def test_broken_or_other_format_images_are_422(client, image, words):
    response = client.post("/v1/jobs", json={"controls": [{"type": "depth", "image": image}]})
    assert response.status_code == 422
    assert any(message.startswith("controls[0].image: ") and words in message for message in _messages(response))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"guidance_scale": NaN}', "guidance_scale"),
        (b'{"steps": 1e400}', "steps"),
        (b'{"steps": "many"}', "steps"),
        (b'{"seed": -1}', "seed"),
        (b'{"num_images": 9}', "num_images"),
        (b'{"prompt": null}', "prompt"),
        (b'{"controls": {"type": "depth"}}', "controls"),
        (b'{"controls": [{"type": "depth", "image": 5}]}', "controls[0].image"),
        (b'{"controls": [{"type": "depth", "image": "", "weight": -1}]}', "controls[0].weight"),
        (b'[1, 2]', "body"),
        (b'"text"', "body"),
    ],
)
def test_odd_values_are_4xx_naming_the_field_never_500(client, raw, field):
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert any(message.startswith(f"{field}: ") for message in _messages(response)), _messages(response)


@pytest.fixture(scope="module")
def busy(tiny_cache):
    with running_server(
        "--max-queue", "3", "--keep-results", "20", "--result-ttl", "2", "--max-pixels", "262144", "--job-timeout", "0",
        "--max-views", "5", cache_dir=tiny_cache,
    ) as live:
        yield live


def test_limits_report_what_this_server_enforces(busy):
    with httpx.Client(base_url=busy.url, timeout=60) as client:
        assert client.get("/v1/limits").json() == {
            "max_pixels": 262144,
            "width": {"min": 64, "max": 2048, "multiple_of": 8},
            "height": {"min": 64, "max": 2048, "multiple_of": 8},
            "steps": {"min": 1, "max": 150},
            "num_images": {"min": 1, "max": 8},
            "guidance_scale": {"min": 0.0, "max": 30.0},
            "strength": {"min": 0.0, "max": 1.0},
            "prompt_max_length": 4000,
            "controls": {"max": 4},
            "control_weight": {"min": 0.0, "max": 2.0},
            "loras": {"max": 8},
            "lora_weight": {"min": -4.0, "max": 4.0},
            "views": {"max": 5},
            "frames": {"max": 8},
            "texture_size": {"min": 16, "max": 1024},
            "schedulers": [
                "unipc", "euler_a", "euler", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "pndm", "lms", "heun", "lcm", "tcd",
            ],
            "max_queue": 3,
            "job_timeout_s": None,
            "max_body_mb": 64.0,
            "batch": {"max": 1},
            "parallel_jobs": 1,
        }
        # The schema it serves shows them too.
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        assert schemas["TextureJobRequest"]["properties"]["views"]["maxItems"] == 5
        request = schemas["JobRequest"]["properties"]
        for side in ("width", "height"):
            assert request[side]["maximum"] == 2048
            assert request[side]["description"].startswith("width x height at most 262144 (this server's --max-pixels)")
        assert request["controls"]["maxItems"] == 4 and request["loras"]["maxItems"] == 8


@pytest.fixture(scope="module")
def crowded(tiny_cache):
    with running_server("--max-queue", "3", cache_dir=tiny_cache) as live:
        yield live


def test_many_concurrent_clients_are_served_or_told_429(crowded):
    clients, results = 16, []
    start = threading.Barrier(clients)

    def one_client():
        try:
            with httpx.Client(base_url=crowded.url, timeout=120) as client:
                start.wait()
                results.append(client.post("/v1/jobs", json={"width": 64, "height": 64, "steps": 10}))
        except Exception as error:  # reported by the assertion below
            results.append(error)

    with httpx.Client(base_url=crowded.url, timeout=120) as client:
        fillers, _ = fill_queue(client)
        threads = [threading.Thread(target=one_client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert all(isinstance(item, httpx.Response) for item in results), results
        assert {response.status_code for response in results} <= {202, 429}, [r.text for r in results]
        accepted = [response.json()["id"] for response in results if response.status_code == 202]
        refused = [response for response in results if response.status_code == 429]
        # The queue was full: a client got in only where a job had left the queue (started) since.
        assert len(accepted) <= started_count(client, fillers + accepted)
        cancel_all(client, fillers)
        assert all(wait_finished(client, job_id, timeout=240)["state"] == "done" for job_id in accepted)
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert "the queue is full" in response.json()["detail"]


def test_finished_jobs_are_bounded_and_old_ids_say_results_expire(busy):
    ids = []
    with httpx.Client(base_url=busy.url, timeout=60) as client:
        most_kept = 0
        while len(ids) < 300:
            response = client.post("/v1/jobs", json={"width": 64, "height": 64, "steps": 1})
            if response.status_code == 429:  # a polite client waits (shorter than Retry-After, to keep the test quick)
                time.sleep(0.02)
                continue
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
            if len(ids) % 10:  # to keep the test quick, 9 in 10 are cancelled: they finish too
                # 409: it finished already; 404: and was dropped (--result-ttl 2)
                assert client.delete(f"/v1/jobs/{ids[-1]}").status_code in (202, 404, 409)
            if len(ids) % 25 == 0:
                most_kept = max(most_kept, client.get("/health").json()["finished_jobs"])
        last = wait_finished(client, ids[-1])
        assert last["state"] == "done"
        assert fetch_image(client, last["images"][0]).size == (64, 64)
        assert 0 < most_kept <= 20
        assert client.get("/health").json()["finished_jobs"] <= 20
        for job_id in ids[:250]:
            response = client.get(f"/v1/jobs/{job_id}")
            assert response.status_code == 404
        assert response.json()["detail"] == (
            f"no job {job_id}: unknown, or its results expired (finished jobs are kept 2 s, the newest 20)"
        )
        # Past --result-ttl even the newest job and its images are gone.
        wait_for(lambda: client.get(f"/v1/jobs/{ids[-1]}").status_code == 404, "the newest job expired", timeout=60)
        assert client.get(last["images"][0]).status_code == 404
        assert client.get("/health").json()["finished_jobs"] == 0


class _FailingEngine:
    """Fails as the engine reports failures (EngineError), then succeeds."""

    device = "cpu"

    def __init__(self):
        self.errors = [OutOfMemory(), GenerationFailed("ValueError: something else")]

    def parameters(self, request):
        return {"seed": request.seed}

    def generate(self, request, on_step=None, should_cancel=None, on_preview=None):
        if self.errors:
            raise self.errors.pop(0)
        return GenerationResult(images=[], parameters={})


def test_a_failed_job_is_reported_and_the_worker_goes_on():
    jobs = JobQueue(_FailingEngine(), ServerConfig())
    jobs.start()
    ids = [jobs.submit(GenerationRequest(steps=1)).id for _ in range(3)]
    wait_for(lambda: all(jobs.get(job_id).finished for job_id in ids), "every job finished")
    states = [jobs.status(job_id) for job_id in ids]
    assert [(s["state"], s["error"]) for s in states] == [
        ("failed", "out of GPU memory: try a smaller width/height or fewer images"),
        ("failed", "ValueError: something else"),
        ("done", None),
    ]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), OutOfMemory),
        (RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"), OutOfMemory),
        (ValueError("something else"), GenerationFailed),
    ],
)
def test_the_engine_recognises_out_of_memory_and_frees_what_the_job_held(monkeypatch, tiny_cache, error, expected):
    freed = []
    monkeypatch.setattr("sd_blender_server.engine.free_memory", lambda: freed.append(True))

    def run(*args, **kwargs):
        raise error

    monkeypatch.setattr(Runner, "run", run)
    engine = GenerationEngine(ServerConfig(model="tiny", controlnets={}, device="cpu", cache_dir=str(tiny_cache)))
    with pytest.raises(expected) as raised:
        engine.generate(GenerationRequest(steps=1))
    assert type(raised.value) is expected and freed == [True]
    if expected is GenerationFailed:
        assert str(raised.value) == "ValueError: something else"
