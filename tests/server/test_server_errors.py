"""Bad requests are 4xx with a message naming the field, never a 500."""
import pytest
from server_helpers import png_base64, run_job

GOOD_CONTROL = {"type": "depth", "image": png_base64(64, 64)}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"width": 100}, "width", "multiple of 8"),
        ({"height": 4096}, "height", "less than or equal to 2048"),
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"seed": 2**32}, "seed", "less than or equal"),
        ({"scheduler": "karras"}, "scheduler", "unipc"),
        ({"controls": [{**GOOD_CONTROL, "start": 0.6, "end": 0.6}]}, "controls[0]", "start (0.6) must be less than end"),
        ({"controls": [{**GOOD_CONTROL, "weight": 3}]}, "controls[0].weight", "less than or equal to 2"),
        ({"controls": [{**GOOD_CONTROL, "image": "not base64!"}]}, "controls[0].image", "not valid base64"),
        ({"controls": [{**GOOD_CONTROL, "image": "aGVsbG8="}]}, "controls[0].image", "not a PNG or JPEG"),
        ({"controls": [GOOD_CONTROL] * 5}, "controls", "at most 4"),
        ({"init_image": png_base64(8, 8, image_format="GIF")}, "init_image", "GIF"),
        ({"init_image": png_base64(64, 64), "steps": 2, "strength": 0.2}, "body", "leaves no step"),
        # Bounds that combine fields hold for a defaulted one too: end 1.0, strength 0.75.
        ({"controls": [{**GOOD_CONTROL, "start": 1.0}]}, "controls[0]", "start (1.0) must be less than end (1.0)"),
        ({"init_image": png_base64(64, 64), "steps": 1}, "body", "strength 0.75 with 1 steps leaves no step"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"controls": [{**GOOD_CONTROL, "weigth": 1}]}, "controls[0].weigth", "Extra inputs"),
    ],
)
def test_bad_request_is_422_naming_the_field(client, body, field, words):
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    messages = [item["msg"] for item in response.json()["detail"]]
    assert any(message.startswith(f"{field}: ") and words in message for message in messages), messages


def test_unknown_control_type_lists_what_the_server_serves(client):
    response = client.post("/v1/jobs", json={"controls": [GOOD_CONTROL, {**GOOD_CONTROL, "type": "foo"}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == (
        "controls[1].type: no ControlNet for 'foo'; this server serves canny, depth, lineart, normal, openpose, seg, tile"
    )


def test_unknown_control_model_lists_the_controlnets(client):
    response = client.post("/v1/jobs", json={"controls": [{**GOOD_CONTROL, "model": "my-depth"}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "controls[0].model: no ControlNet named 'my-depth'; this server has tiny"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{oops", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b"\xff\xfe{", "byte 0 is not UTF-8 (invalid start byte)"),
        ('{"prompt": "a cabin"}'.encode("utf-16"), "byte 0 is not UTF-8 (invalid start byte)"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_body_that_is_not_utf8_json_is_422_naming_the_body(client, raw, words):
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["body"], "msg": f"body: is not UTF-8 JSON: {words}", "type": "json_invalid"}]


def _sample_path(template: str) -> str:
    return template.replace("{job_id}", "0123abcd").replace("{index}", "0")


def test_a_method_a_path_does_not_take_is_405_listing_every_method_it_takes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for template, operations in paths.items():
        taken = sorted(method.upper() for method in operations)
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - set(taken):
            response = client.request(method, _sample_path(template))
            assert response.status_code == 405, (method, template)
            assert response.headers["allow"] == ", ".join(taken), (method, template)
            assert response.json() == {"detail": f"{method} is not allowed here; this path accepts {', '.join(taken)}"}


def test_unknown_job_and_missing_image_are_404(client):
    for method, path in [
        ("GET", "/v1/jobs/0123abcd"),
        ("DELETE", "/v1/jobs/0123abcd"),
        ("GET", "/v1/jobs/0123abcd/events"),
        ("GET", "/v1/jobs/0123abcd/images/0.png"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "0123abcd" in response.json()["detail"]

    status = run_job(client, width=64, height=64, steps=1)
    response = client.get(f"/v1/jobs/{status['id']}/images/1.png")
    assert response.status_code == 404
    assert "no image 1" in response.json()["detail"]
