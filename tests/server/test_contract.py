"""The OpenAPI schema is the contract between the add-on and the server."""
import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sd_blender.core.png import encode_png  # noqa: E402
from sd_blender.core.request import ControlImage, GenerationSettings, build_job_request  # noqa: E402
from sd_blender_server.schemas import JobRequest  # noqa: E402


def test_docs_openapi_json_is_the_live_schema(client):
    written = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    assert client.get("/openapi.json").json() == written, "docs/openapi.json is stale: run `make openapi`"


def test_what_the_addon_sends_validates_against_the_request_schema():
    depth = encode_png(np.linspace(0, 255, 64 * 64).astype(np.uint8).reshape(64, 64))
    body = build_job_request(GenerationSettings(
        prompt="p", seed=None, width=64, height=64, guess_mode=True, init_png=depth, strength=0.5,
        controls=(ControlImage("depth", depth, 0.5, 0.0, 0.8), ControlImage("tile", depth, model="tiny")),
    ))
    request = JobRequest.model_validate(body)
    assert request.controls[0].type == "depth" and request.controls[0].end == 0.8
    assert request.controls[1].model == "tiny" and request.guess_mode and request.init_image.size == (64, 64)
    sent = Image.open(io.BytesIO(base64.b64decode(body["controls"][0]["image"])))
    assert sent.size == (64, 64) and sent.mode == "L"


def test_the_addon_accepts_the_server_answer_for_a_submitted_request(client):
    body = build_job_request(GenerationSettings(prompt="p", width=64, height=64, steps=1))
    created = client.post("/v1/jobs", json=body)
    assert created.status_code == 202 and set(created.json()) == {"id"}


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
