"""The OpenAPI schema is the contract between the add-on and the server: the add-on's own request
builder and HTTP client (sd_blender.core, standard library only) send jobs through a recording
stand-in to a live server; what they send validates against docs/openapi.json, the server takes
it, and its answers validate against the schema too."""
import json
import sys
from pathlib import Path

import jsonschema_rs
import numpy as np
import pytest
from stand_in_server import forward, send, stand_in
from waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sd_blender.core.client import ServerClient  # noqa: E402
from sd_blender.core.png import encode_png  # noqa: E402
from sd_blender.core.request import ControlImage, GenerationSettings, build_job_request  # noqa: E402

CONTRACT = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
DEPTH = encode_png(np.linspace(0, 255, 64 * 64).astype(np.uint8).reshape(64, 64))


def _schema(component: str):
    """A validator of one of the contract's components (its references resolved within the contract)."""
    return jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{component}", **CONTRACT})


def test_docs_openapi_json_is_the_live_schema(client):
    written = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    assert client.get("/openapi.json").json() == written, "docs/openapi.json is stale: run `make openapi`"


@pytest.fixture
def addon_client(server):
    """The add-on's client, talking to the live server through a stand-in that records each request
    (method, path, body) as sent."""
    sent = []

    def record_and_forward(handler):
        body = handler.request_body()
        sent.append((handler.command, handler.path, body))
        handler.request_body = lambda: body
        send(handler, *forward(server.url, handler))

    with stand_in(record_and_forward) as url:
        yield ServerClient(url, timeout=60), sent


@pytest.mark.parametrize(
    "settings",
    [
        GenerationSettings(prompt="p", width=64, height=64, steps=1),
        GenerationSettings(
            prompt="a cabin", negative_prompt="blurry", seed=7, steps=4, width=64, height=64, num_images=2,
            scheduler="euler_a", guess_mode=True, init_png=DEPTH, strength=0.5, model="tiny",
            controls=(ControlImage("depth", DEPTH, 0.5, 0.0, 0.8), ControlImage("tile", DEPTH, model="tiny")),
        ),
        GenerationSettings(prompt="a cabin", seed=3, steps=4, guidance_scale=1.5, width=64, height=64, scheduler="lcm"),
        GenerationSettings(prompt="a cabin", seed=3, steps=4, guidance_scale=1.5, width=64, height=64, scheduler="tcd"),
    ],
    ids=["plain", "everything", "lcm", "tcd"],
)
def test_what_the_addon_sends_follows_the_contract_and_the_server_runs_it(addon_client, settings):
    client, sent = addon_client
    job_id = client.submit(build_job_request(settings))
    (method, path, body), = sent
    assert (method, path) == ("POST", "/v1/jobs")
    errors = [error.message for error in _schema("JobRequest").iter_errors(json.loads(body))]
    assert not errors, errors

    wait_for(lambda: client.job(job_id)["state"] in ("done", "failed"), "the job's end")
    status = client.job(job_id)
    _schema("JobStatus").validate(status)
    assert status["state"] == "done", status["error"]
    parameters = status["parameters"]
    assert (parameters["width"], parameters["height"], parameters["steps"]) == (settings.width, settings.height, settings.steps)
    assert [control["type"] for control in parameters["controls"]] == [control.type for control in settings.controls]
    assert len(status["images"]) == settings.num_images
    assert client.download(status["images"][-1]).startswith(b"\x89PNG")


def test_the_schema_declares_the_errors_clients_meet(client):
    paths = client.get("/openapi.json").json()["paths"]
    declared = {(method, path): operation["responses"] for path, item in paths.items() for method, operation in item.items()}
    for (method, path), responses in declared.items():
        assert "413" in responses, (method, path)  # the body limit holds on every route
        if path.startswith("/v1/"):
            assert "WWW-Authenticate" in responses["401"]["headers"], (method, path)
    assert {"202", "422", "429"} <= set(declared["post", "/v1/jobs"])
    assert {"404", "409"} <= set(declared["delete", "/v1/jobs/{job_id}"])
    assert {"404", "422"} <= set(declared["get", "/v1/jobs/{job_id}/images/{index}.png"])  # an index not a number
    assert "Retry-After" in declared["post", "/v1/jobs"]["429"]["headers"]
    submitted = declared["post", "/v1/jobs"]["202"]
    assert "Location" in submitted["headers"]
    assert {link["operationId"] for link in submitted["links"].values()} == {"getJob", "getJobEvents", "getJobImage", "cancelJob"}
    # A declared error answers in the declared shape: {"detail": "<one line>"}.
    unknown = client.get("/v1/jobs/no-such-job")
    assert unknown.status_code == 404 and list(unknown.json()) == ["detail"] and isinstance(unknown.json()["detail"], str)
