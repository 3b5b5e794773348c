"""Frame jobs (POST /v1/frame-jobs) through real HTTP against the live tiny-model server: a chunk of
animation frames runs as one batch from one seed, every frame's self-attention also reading an anchor
frame's; the job reports, cancels and is refused like any other, and leaves nothing on the pipeline.

The tiny ControlNets' condition embedding ends in a zero convolution, as a new ControlNet's does, so
their control images change nothing: frames here differ by their init images."""
import json
import math

import httpx
import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from live_server import running_server
from PIL import Image
from server_helpers import (
    fetch_image, field_error, image_base64, png_base64, read_events, run_job, wait_finished, wait_running,
)
from waiting import wait_for

from sd_blender_server.cross_frame import CrossFrameAttention

SIZE = 64
CONTROL = png_base64(SIZE, SIZE, (90, 90, 90))
RANDOM = np.random.default_rng(4)
INIT_IMAGES = [Image.fromarray(RANDOM.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(4)]
INITS = [image_base64(image) for image in INIT_IMAGES]
# The left half is repainted, the right half kept.
MASK = Image.new("L", (SIZE, SIZE), 0)
MASK.paste(255, (0, 0, SIZE // 2, SIZE))
REPAINTED, KEPT = np.s_[:, : SIZE // 2], np.s_[:, SIZE // 2:]


def frame(init: str | None = None, controls: int = 1, **images) -> dict:
    return {"control_images": [CONTROL] * controls, "init_image": init, **images}


def frame_job(frames: list[dict], anchor: dict | None = None, **settings) -> dict:
    return {
        "prompt": "a walk", "seed": 5, "steps": 4, "width": SIZE, "height": SIZE, "strength": 0.8,
        "controls": [{"type": "depth"}], "frames": frames, "anchor": anchor, **settings,
    }


def submit_frames(client, body: dict) -> str:
    response = client.post("/v1/frame-jobs", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return response.json()["id"]


def frame_images(client, body: dict) -> list[bytes]:
    status = wait_finished(client, submit_frames(client, body))
    assert status["state"] == "done", status["error"]
    return [fetch_image(client, path).tobytes() for path in status["images"]]


def test_cross_frame_attention_reads_each_groups_anchor():
    """Each row attends to its own tokens and its group's anchor's, by the layer's projections; the
    anchor's own result is plain self-attention."""
    torch.manual_seed(0)
    heads, head_size, tokens, group = 2, 4, 5, 3
    attention = Attention(query_dim=heads * head_size, heads=heads, dim_head=head_size)
    hidden = torch.randn(2 * group, tokens, heads * head_size)  # two guidance halves: [anchor, frame, frame] each
    with torch.no_grad():
        output = CrossFrameAttention(group)(attention, hidden)

        def by_head(states: torch.Tensor) -> torch.Tensor:
            return states.view(len(states), heads, head_size).transpose(0, 1)

        for row in range(len(hidden)):
            context = torch.cat([hidden[row], hidden[row - row % group]])
            query, key, value = by_head(attention.to_q(hidden[row])), by_head(attention.to_k(context)), by_head(
                attention.to_v(context))
            weights = torch.softmax(query @ key.transpose(1, 2) / math.sqrt(head_size), dim=-1)
            expected = attention.to_out[0]((weights @ value).transpose(0, 1).reshape(tokens, heads * head_size))
            torch.testing.assert_close(output[row], expected)
        alone = AttnProcessor2_0()(attention, hidden[::group])
        torch.testing.assert_close(output[::group], alone)


def test_identical_frames_come_out_identical_and_report_like_a_job(client):
    body = frame_job([frame(INITS[0])] * 3, anchor=frame(INITS[1]))
    job_id = submit_frames(client, body)
    events = read_events(client, job_id)
    steps = int(4 * 0.8)  # img2img runs steps x strength
    assert [data for name, data in events if name == "progress"] == [{"step": step, "total": steps} for step in range(1, steps + 1)]
    status = events[-1][1]
    assert status["state"] == "done", status["error"]
    assert status["images"] == [f"/v1/jobs/{job_id}/images/{index}.png" for index in range(3)]
    parameters = status["parameters"]
    assert parameters["frames"] == {"count": 3, "anchor": True}
    assert (parameters["num_images"], parameters["seeds"], parameters["strength"]) == (3, [5, 5, 5], 0.8)
    images = [fetch_image(client, path) for path in status["images"]]
    assert [image.size for image in images] == [(SIZE, SIZE)] * 3
    assert [json.loads(image.info["sd_blender"])["image_index"] for image in images] == [0, 1, 2]
    assert "Seed: 5" in images[2].info["parameters"]
    assert images[0].tobytes() == images[1].tobytes() == images[2].tobytes()


def test_a_null_seed_is_chosen_once_for_every_frame(client):
    status = wait_finished(client, submit_frames(client, frame_job([frame(INITS[0])] * 2, seed=None)))
    assert status["state"] == "done", status["error"]
    seed = status["parameters"]["seed"]
    assert isinstance(seed, int) and status["parameters"]["seeds"] == [seed, seed]
    assert status["parameters"]["frames"] == {"count": 2, "anchor": False}


def test_the_anchor_is_the_same_in_every_chunk_and_changes_the_frames(client):
    """A frame comes out the same in any chunk with the same anchor (the chunks are independent); with
    another anchor it does not (each frame's only link to anything but itself is the anchor)."""
    first = frame_images(client, frame_job([frame(INITS[0]), frame(INITS[1])], anchor=frame(INITS[2])))
    second = frame_images(client, frame_job([frame(INITS[0]), frame(INITS[3])], anchor=frame(INITS[2])))
    other_anchor = frame_images(client, frame_job([frame(INITS[0]), frame(INITS[3])], anchor=frame(INITS[1])))
    assert first[0] == second[0]
    assert other_anchor[0] != second[0]


def test_nothing_stays_on_the_pipeline_after_a_frame_job_done_or_cancelled(client):
    plain = {"prompt": "a walk", "seed": 11, "steps": 4, "width": SIZE, "height": SIZE,
             "controls": [{"type": "depth", "image": CONTROL}]}
    before = fetch_image(client, run_job(client, **plain)["images"][0]).tobytes()
    frame_images(client, frame_job([frame(INITS[0]), frame(INITS[1])], anchor=frame(INITS[2])))
    assert fetch_image(client, run_job(client, **plain)["images"][0]).tobytes() == before
    long_job = frame_job([frame(), frame()], anchor=frame(), steps=150, width=256, height=256)
    job_id = submit_frames(client, long_job)
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] >= 1, "a step of the frame job")
    assert client.delete(f"/v1/jobs/{job_id}").status_code in (202, 409)
    status = wait_finished(client, job_id)
    assert status["state"] == "cancelled" and status["images"] == []
    assert fetch_image(client, run_job(client, **plain)["images"][0]).tobytes() == before


def test_inpainted_frames_keep_what_their_masks_keep(client):
    mask = image_base64(MASK)
    body = frame_job([frame(INITS[0], mask_image=mask), frame(INITS[1], mask_image=mask)], anchor=frame(INITS[2]),
                     strength=0.9)
    status = wait_finished(client, submit_frames(client, body))
    assert status["state"] == "done", status["error"]
    assert status["parameters"]["mask"] is True
    for path, init in zip(status["images"], INIT_IMAGES):
        pixels, init_pixels = (np.asarray(image, dtype=np.int16) for image in (fetch_image(client, path), init))
        assert np.array_equal(pixels[KEPT], init_pixels[KEPT])
        assert np.abs(pixels[REPAINTED] - init_pixels[REPAINTED]).mean() > 20


@pytest.mark.parametrize(
    "model, controls, settings",
    [
        ("toy-xl", [{"type": "depth", "model": "toy_xl_depth"}], {}),
        ("toy-xl", [{"type": "depth", "model": "toy_xl_depth"}, {"type": "normal", "model": "toy_xl_depth"}],
         {"guess_mode": True}),
        ("toy-xl", [{"type": "depth", "model": "toy_union_promax"}, {"type": "normal", "model": "toy_union_promax"}], {}),
        ("tiny", [{"type": "depth"}, {"type": "normal"}], {"guess_mode": True}),
    ],
)
@pytest.mark.parametrize("img2img", [False, True])
def test_frame_jobs_run_on_every_kind_of_model(toy_models_client, model, controls, settings, img2img):
    inits = INITS if img2img else [None] * 3
    frames = [frame(init, controls=len(controls)) for init in inits[:2]]
    body = frame_job(frames, anchor=frame(inits[2], controls=len(controls)), model=model, controls=controls, **settings)
    status = wait_finished(toy_models_client, submit_frames(toy_models_client, body))
    assert status["state"] == "done", status["error"]
    assert [fetch_image(toy_models_client, path).size for path in status["images"]] == [(SIZE, SIZE)] * 2


def test_a_lora_applies_under_cross_frame_attention_and_to_its_job_only(toy_models_client):
    body = frame_job([frame(INITS[0]), frame(INITS[1])], anchor=frame(INITS[2]))
    plain = frame_images(toy_models_client, body)
    styled = frame_images(toy_models_client, {**body, "loras": [{"name": "tiny_style", "weight": 1.0}]})
    assert all(styled_frame != plain_frame for styled_frame, plain_frame in zip(styled, plain))
    assert frame_images(toy_models_client, body) == plain


def test_bad_frame_jobs_are_422s_naming_their_field(client):
    def refused(body: dict, field: str) -> str:
        return field_error(client.post("/v1/frame-jobs", json=body), field)

    good = frame(INITS[0])
    assert "has 2 images for 1 controls" in refused(frame_job([good, good, frame(INITS[0], controls=2)]), "frames[2].control_images")
    assert "has 0 images for 1 controls" in refused(frame_job([good], anchor=frame(INITS[1], controls=0)), "anchor.control_images")
    assert "is missing: frame 0 has an init_image" in refused(frame_job([good, frame()]), "frames[1].init_image")
    assert "is missing" in refused(frame_job([good], anchor=frame()), "anchor.init_image")
    assert "must be null: frame 0 has no init_image" in refused(frame_job([frame()], anchor=good), "anchor.init_image")
    masked = frame(mask_image=image_base64(MASK))
    assert "needs init_image" in refused(frame_job([masked]), "frames[0].mask_image")
    small_mask = frame(INITS[0], mask_image=image_base64(MASK.resize((32, 48))))
    assert "32x48" in refused(frame_job([good, small_mask]), "frames[1].mask_image")
    assert "mask_image" in refused(frame_job([good], anchor={**good, "mask_image": image_base64(MASK)}), "anchor.mask_image")
    assert "at most 8 items" in refused(frame_job([good] * 9), "frames")
    assert "at least 1 item" in refused(frame_job([]), "frames")
    assert "no step to run" in refused(frame_job([good], steps=1, strength=0.5), "strength")
    assert "no ControlNet for 'smell'" in refused(frame_job([good], controls=[{"type": "smell"}]), "controls[0].type")
    assert "Extra inputs" in refused(frame_job([good], controls=[{"type": "depth", "image": CONTROL}]), "controls[0].image")
    assert client.get("/v1/limits").json()["frames"] == {"max": 8}


@pytest.fixture(scope="module")
def limited_client(tiny_cache):
    with running_server(
        "--device", "cpu", "--max-frames", "2", "--max-queue", "1", "--job-timeout", "3", cache_dir=tiny_cache
    ) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def test_max_frames_the_queue_bound_and_the_time_limit_hold(limited_client):
    assert limited_client.get("/v1/limits").json()["frames"] == {"max": 2}
    message = field_error(limited_client.post("/v1/frame-jobs", json=frame_job([frame(INITS[0])] * 3)), "frames")
    assert "at most 2 items" in message
    running = submit_frames(limited_client, frame_job([frame(), frame()], anchor=frame(), steps=150, width=256, height=256))
    wait_running(limited_client, running)
    waiting = submit_frames(limited_client, frame_job([frame(INITS[0])]))
    refused = limited_client.post("/v1/frame-jobs", json=frame_job([frame(INITS[0])]))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert limited_client.delete(f"/v1/jobs/{waiting}").status_code == 202
    status = wait_finished(limited_client, running)
    assert status["state"] == "failed" and "time limit of 3 s (--job-timeout)" in status["error"]
