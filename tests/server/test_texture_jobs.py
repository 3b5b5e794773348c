"""Synchronized texture jobs (POST /v1/texture-jobs) through real HTTP against the live tiny-model
server: the views agree, the job reports, cancels and is refused like any other."""
import base64
import io

import httpx
import numpy as np
import pytest
from live_server import running_server
from PIL import Image
from server_helpers import fetch_image, field_error, png_base64, read_events, run_job, wait_finished, wait_running


WIDTH, HEIGHT = 128, 64
COLUMNS, ROWS = WIDTH // 8, HEIGHT // 8  # the latent image, where correspondences are given


def correspondence(first_column: float, texture_columns: float, cosine: float = 0.8, rows: int = ROWS,
                   columns: int = COLUMNS) -> str:
    """A view looking straight at a flat strip: its latent column x sees the texture's column
    first_column + x of texture_columns, its row y the texture's row y; base64 float32 (u, v, c)."""
    ys, xs = np.mgrid[0:rows, 0:columns]
    u = (first_column + xs + 0.5) / texture_columns
    v = 1 - (ys + 0.5) / rows
    array = np.stack([u, v, np.full_like(u, cosine)], -1).astype("<f4")
    return base64.b64encode(array.tobytes()).decode()


def texture_job(*correspondences: str, controlnet: str | None = None, **settings) -> dict:
    control = {"type": "depth", "model": controlnet, "image": png_base64(WIDTH, HEIGHT, (128, 128, 128))}
    return {
        "prompt": "a crate", "seed": 5, "steps": 8, "width": WIDTH, "height": HEIGHT, "texture_size": 32,
        "views": [{"controls": [dict(control)], "correspondence": item} for item in correspondences],
        **settings,
    }


def view_images(client, status: dict) -> list[np.ndarray]:
    return [np.asarray(fetch_image(client, path), dtype=np.float32) for path in status["images"]]


def submit_texture(client, body: dict) -> str:
    response = client.post("/v1/texture-jobs", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return response.json()["id"]


def agreement_gain(client, **settings) -> float:
    """View 1 sees the strip shifted by 4 latent columns (32 pixels) from view 0: how much better
    their images agree where both see it than the same views seeing two disjoint halves of the texture
    (the ratio of the mean absolute differences over those pixels). A shift, not a mirror: the random
    convolutions are not mirror-symmetric, so mirrored latents do not decode to mirrored images;
    shifted ones do, away from the borders."""
    shift = 4
    shared = texture_job(correspondence(shift, COLUMNS + shift), correspondence(0, COLUMNS + shift), **settings)
    disjoint = texture_job(correspondence(0, 2 * COLUMNS), correspondence(COLUMNS, 2 * COLUMNS), **settings)
    differences = []
    for body in (shared, disjoint):
        status = wait_finished(client, submit_texture(client, body))
        assert status["state"] == "done", status["error"]
        first, second = view_images(client, status)
        differences.append(np.abs(first[:, : WIDTH - 8 * shift] - second[:, 8 * shift:]).mean())
    print(f"mean abs difference over the shared pixels: {differences[0]:.2f} fused, {differences[1]:.2f} "
          f"disjoint: {differences[1] / differences[0]:.1f}x")
    return differences[1] / differences[0]


def test_views_seeing_the_same_texels_agree(client):
    assert agreement_gain(client) > 3


@pytest.mark.parametrize("controlnet", ["toy_xl_depth", "toy_union_promax"])
def test_sdxl_views_agree_too(toy_models_client, controlnet):
    assert agreement_gain(toy_models_client, model="toy-xl", controlnet=controlnet, scheduler="euler") > 3


def test_a_lora_applies_to_its_texture_job_only(toy_models_client):
    body = texture_job(correspondence(0, COLUMNS), correspondence(0, COLUMNS))
    body["views"][0]["neighbours"] = [1]  # the LoRA's attention layers under the neighbours' processor

    def pixels(**settings) -> tuple[dict, list[np.ndarray]]:
        status = wait_finished(toy_models_client, submit_texture(toy_models_client, {**body, **settings}))
        assert status["state"] == "done", status["error"]
        return status, view_images(toy_models_client, status)

    _, plain = pixels()
    styled_status, styled = pixels(loras=[{"name": "tiny_style", "weight": 1.0}])
    assert styled_status["parameters"]["loras"] == [{"name": "tiny_style", "weight": 1.0}]
    assert not np.array_equal(styled[0], plain[0])
    _, after = pixels()
    assert all(np.array_equal(view, plain_view) for view, plain_view in zip(after, plain))


def test_progress_every_step_then_one_image_per_view(client):
    body = texture_job(*(correspondence(0, COLUMNS) for _ in range(3)), steps=6, scheduler="euler")
    job_id = submit_texture(client, body)
    events = read_events(client, job_id)
    assert [data for name, data in events if name == "progress"] == [{"step": step, "total": 6} for step in range(1, 7)]
    status = events[-1][1]
    assert status["state"] == "done", status["error"]
    assert status["images"] == [f"/v1/jobs/{job_id}/images/{index}.png" for index in range(3)]
    assert status["parameters"]["texture"] == {
        "views": 3, "texture_size": 32, "exponent_start": 1.0, "exponent_end": 6.0, "neighbours": [[], [], []]
    }
    assert status["parameters"]["seeds"] == [5, 5, 5]
    assert [fetch_image(client, path).size for path in status["images"]] == [(WIDTH, HEIGHT)] * 3


def test_neighbour_attention_changes_the_views(client):
    """Views seeing disjoint halves of the texture share nothing through the fusion; reading each
    other's self-attention changes them (a little: the tiny UNet's attention, at its lowest
    resolution only, is a few percent of its output; the same job without neighbours gives the
    same pixels every time)."""
    halves = [correspondence(0, 2 * COLUMNS), correspondence(COLUMNS, 2 * COLUMNS)]
    alone = view_images(client, wait_finished(client, submit_texture(client, texture_job(*halves))))
    body = texture_job(*halves)
    body["views"][0]["neighbours"], body["views"][1]["neighbours"] = [1], [0]
    status = wait_finished(client, submit_texture(client, body))
    assert status["parameters"]["texture"]["neighbours"] == [[1], [0]]
    together = view_images(client, status)
    assert all(np.abs(view - alone_view).max() >= 1 for view, alone_view in zip(together, alone))


def previews_of(events: list[tuple[str, dict]]) -> list[dict]:
    return [data for name, data in events if name == "preview"]


def test_a_texture_job_previews_its_first_view_forming(client):
    body = texture_job(correspondence(0, COLUMNS), correspondence(0, COLUMNS), steps=6, scheduler="euler",
                       preview_every=2)
    job_id = submit_texture(client, body)
    events = read_events(client, job_id)
    assert [(data["step"], data["total"], data["width"], data["height"]) for data in previews_of(events)] == [
        (2, 6, WIDTH, HEIGHT), (4, 6, WIDTH, HEIGHT)]
    status = events[-1][1]
    assert status["state"] == "done", status["error"]
    assert status["preview_step"] == 4 and status["parameters"]["preview_every"] == 2
    assert status["parameters"]["preview_decoder"] in ("linear", "taesd")
    response = client.get(f"/v1/jobs/{job_id}/preview")
    assert response.status_code == 200 and response.headers["x-preview-step"] == "4"
    assert Image.open(io.BytesIO(response.content)).size == (WIDTH, HEIGHT)


def test_a_texture_jobs_preview_is_its_first_views_and_changes_no_image(client):
    """Three views seeing apart parts of the texture (so each forms from its own noise alone): the
    job [A, B] previews what [A, C] previews, not what [B, A] does; previews off, the same images."""
    a, b, c = (correspondence(first, 4 * COLUMNS) for first in (0, 3 * COLUMNS // 2, 3 * COLUMNS))

    def last_preview(*views: str) -> np.ndarray:
        events = read_events(client, submit_texture(client, texture_job(*views, steps=6, preview_every=5)))
        assert events[-1][1]["state"] == "done", events[-1][1]["error"]
        (preview,) = previews_of(events)
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(preview["image"]))), dtype=np.float32)

    first_a, also_a, first_b = last_preview(a, b), last_preview(a, c), last_preview(b, a)
    assert np.abs(first_a - also_a).mean() < 0.1 * np.abs(first_a - first_b).mean()
    images = [view_images(client, wait_finished(client, submit_texture(client, texture_job(a, b, preview_every=every))))
              for every in (0, 1)]
    assert all(np.array_equal(plain, previewed) for plain, previewed in zip(*images))


def long_texture_job() -> dict:
    """The most views at 512 x 512, 150 steps: many seconds even on a fast machine."""
    body = texture_job(*(correspondence(0, 64, rows=64, columns=64) for _ in range(16)), steps=150, width=512, height=512)
    for view in body["views"]:
        view["controls"][0]["image"] = png_base64(512, 512)
    return body


def test_a_running_texture_job_is_cancelled(client):
    job_id = submit_texture(client, long_texture_job())
    wait_running(client, job_id)
    assert client.delete(f"/v1/jobs/{job_id}").status_code in (202, 409)
    status = wait_finished(client, job_id)
    assert status["state"] == "cancelled"
    assert status["progress"]["step"] < 150 and status["images"] == []


@pytest.fixture(scope="module")
def limited_client(tiny_cache):
    with running_server("--device", "cpu", "--max-queue", "1", "--job-timeout", "3", cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def test_texture_jobs_keep_the_queue_bound_and_the_time_limit(limited_client):
    running = submit_texture(limited_client, long_texture_job())
    wait_running(limited_client, running)
    waiting = submit_texture(limited_client, texture_job(correspondence(0, COLUMNS)))
    refused = limited_client.post("/v1/texture-jobs", json=texture_job(correspondence(0, COLUMNS)))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert limited_client.delete(f"/v1/jobs/{waiting}").status_code == 202  # not needed: let it go
    status = wait_finished(limited_client, running)
    assert status["state"] == "failed" and "time limit of 3 s (--job-timeout)" in status["error"]


def test_bad_views_are_422s_naming_their_field(client):
    good = correspondence(0, COLUMNS)
    wrong_size = texture_job(good, correspondence(0, COLUMNS, columns=COLUMNS - 1))
    assert "shape (8, 16, 3): 1536 bytes" in field_error(client.post("/v1/texture-jobs", json=wrong_size), "views[1].correspondence")
    outside = texture_job(correspondence(0, COLUMNS - 2))  # u reaches past 1
    assert "u or v outside [0, 1]" in field_error(client.post("/v1/texture-jobs", json=outside), "views[0].correspondence")
    cosine = texture_job(correspondence(0, COLUMNS, cosine=1.5))
    assert "c (cosine) outside [0, 1]" in field_error(client.post("/v1/texture-jobs", json=cosine), "views[0].correspondence")
    most = client.get("/v1/limits").json()["views"]["max"]
    assert "at most 16 items" in field_error(client.post("/v1/texture-jobs", json=texture_job(*[good] * (most + 1))), "views")
    other_controls = texture_job(good, good)
    other_controls["views"][1]["controls"][0]["weight"] = 0.5
    assert "same controls" in field_error(client.post("/v1/texture-jobs", json=other_controls), "views[1].controls")
    itself = texture_job(good, good)
    itself["views"][1]["neighbours"] = [1]
    assert "other views (0 to 1, not 1)" in field_error(client.post("/v1/texture-jobs", json=itself), "views[1].neighbours")
    unknown = texture_job(good)
    unknown["views"][0]["controls"][0]["type"] = "smell"
    assert "no ControlNet for 'smell'" in field_error(client.post("/v1/texture-jobs", json=unknown), "views[0].controls[0].type")


def test_an_ordinary_job_is_unchanged_by_a_texture_job_before_it(client):
    ordinary = {"prompt": "a crate", "seed": 11, "steps": 4, "width": 64, "height": 64, "scheduler": "unipc",
                "controls": [{"type": "depth", "image": png_base64(64, 64, (90, 90, 90))}]}
    before = fetch_image(client, run_job(client, **ordinary)["images"][0]).tobytes()
    texture = texture_job(correspondence(0, COLUMNS), correspondence(0, COLUMNS), scheduler="unipc")
    texture["views"][0]["neighbours"] = [1]
    assert wait_finished(client, submit_texture(client, texture))["state"] == "done"
    assert fetch_image(client, run_job(client, **ordinary)["images"][0]).tobytes() == before
