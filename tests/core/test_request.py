import base64

import pytest
from sd_blender_server.schemas import JobRequest

from sd_blender.core.request import (
    ControlImage,
    GenerationSettings,
    build_job_request,
    control_type_for_pass,
    round_to_multiple_of_8,
)


@pytest.mark.parametrize("value, rounded", [(512, 512), (515, 512), (516, 520), (1080, 1080), (10, 64), (5000, 2048)])
def test_sizes_round_to_the_nearest_multiple_of_8_within_bounds(value, rounded):
    assert round_to_multiple_of_8(value) == rounded


def test_request_carries_settings_and_base64_controls():
    settings = GenerationSettings(
        prompt="a lighthouse", negative_prompt="blurry", seed=42, steps=12, guidance_scale=6.0,
        width=640, height=384, num_images=2, scheduler="euler_a",
        controls=(ControlImage("depth", b"\x89PNG fake", weight=0.8, start=0.1, end=0.9),),
    )
    body = build_job_request(settings)
    assert body["prompt"] == "a lighthouse" and body["negative_prompt"] == "blurry"
    assert (body["seed"], body["steps"], body["width"], body["height"], body["num_images"]) == (42, 12, 640, 384, 2)
    assert body["scheduler"] == "euler_a" and body["guidance_scale"] == 6.0
    (control,) = body["controls"]
    assert control["type"] == "depth" and base64.b64decode(control["image"]) == b"\x89PNG fake"
    assert (control["weight"], control["start"], control["end"]) == (0.8, 0.1, 0.9)


def test_random_seed_is_sent_as_null():
    assert build_job_request(GenerationSettings(prompt="x"))["seed"] is None


def test_size_not_a_multiple_of_8_is_refused_before_sending():
    with pytest.raises(ValueError, match="width"):
        build_job_request(GenerationSettings(prompt="x", width=500))


def test_a_named_controlnet_guess_mode_and_img2img_are_sent():
    settings = GenerationSettings(
        prompt="x",
        controls=(ControlImage("lineart", b"png", model="lllyasviel/control_v11p_sd15_canny"), ControlImage("depth", b"png")),
        guess_mode=True,
        init_png=b"color",
        strength=0.4,
    )
    body = build_job_request(settings)
    assert body["controls"][0]["model"] == "lllyasviel/control_v11p_sd15_canny"
    assert "model" not in body["controls"][1]  # the server picks the ControlNet serving "depth"
    assert body["guess_mode"] is True
    assert base64.b64decode(body["init_image"]) == b"color" and body["strength"] == 0.4
    assert "init_image" not in build_job_request(GenerationSettings(prompt="x"))


def test_the_color_pass_conditions_the_tile_controlnet():
    assert control_type_for_pass("color") == "tile"
    assert control_type_for_pass("depth") == "depth"


def test_a_chosen_base_model_and_loras_are_sent_and_validate_against_the_request_schema():
    body = build_job_request(GenerationSettings(
        prompt="x", model="tiny-ldm", loras=(("tiny_style", 1.0), ("tiny_detail", -0.5)),
    ))
    assert body["model"] == "tiny-ldm"
    assert body["loras"] == [{"name": "tiny_style", "weight": 1.0}, {"name": "tiny_detail", "weight": -0.5}]
    request = JobRequest.model_validate(body)
    assert request.model == "tiny-ldm"
    assert [(lora.name, lora.weight) for lora in request.loras] == [("tiny_style", 1.0), ("tiny_detail", -0.5)]


@pytest.mark.parametrize("model", [None, ""])
def test_the_servers_default_model_and_no_loras_send_neither_field(model):
    body = build_job_request(GenerationSettings(prompt="x", model=model))
    assert "model" not in body and "loras" not in body
    request = JobRequest.model_validate(body)
    assert request.model is None and request.loras == []


def test_a_tileable_request_asks_for_tiling_and_the_server_accepts_it():
    body = build_job_request(GenerationSettings(prompt="tiles", tiling="xy"))
    assert body["tiling"] == "xy"
    assert JobRequest.model_validate(body).tiling == "xy"
    assert "tiling" not in build_job_request(GenerationSettings(prompt="x"))
