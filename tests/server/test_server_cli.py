"""The command line: token, ControlNet options, start-up failures."""
import subprocess

import httpx
import pytest
from live_server import running_server, server_command
from server_helpers import png_base64, run_job, submit, wait_finished

AUTHORIZED = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def guarded_server(tiny_cache):
    """A token from $SD_BLENDER_TOKEN, and a ControlNet option pointing at nothing."""
    with running_server(
        "--controlnet", "segmentation=/nonexistent/controlnet", cache_dir=tiny_cache, env={"SD_BLENDER_TOKEN": "s3cret"}
    ) as live:
        yield live


def test_token_is_required_on_every_route_but_health(guarded_server):
    url = guarded_server.url
    assert httpx.get(url + "/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = httpx.get(url + "/v1/models", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["detail"] == "missing or wrong bearer token"
    assert httpx.post(url + "/v1/jobs", json={}).status_code == 401
    assert httpx.get(url + "/v1/models", headers=AUTHORIZED).status_code == 200
    assert httpx.get(url + "/v1/jobs/abc", headers=AUTHORIZED).status_code == 404


def test_a_failing_job_is_reported_and_the_worker_goes_on(guarded_server):
    with httpx.Client(base_url=guarded_server.url, headers=AUTHORIZED, timeout=60) as client:
        served = [item["type"] for item in client.get("/v1/models").json()["controlnets"]]
        assert served == ["canny", "depth", "lineart", "normal", "openpose", "seg", "segmentation", "tile"]
        control = {"type": "segmentation", "image": png_base64(64, 64)}
        status = wait_finished(client, submit(client, width=64, height=64, steps=2, controls=[control]))
        assert status["state"] == "failed"
        assert status["error"] == (
            "model '/nonexistent/controlnet' not found: no such file or folder /nonexistent/controlnet"
        )
        run_job(client, width=64, height=64, steps=2)


def test_model_that_cannot_load_exits_2_with_one_clear_line(tmp_path):
    result = subprocess.run(
        [*server_command(), "--model", "/nonexistent/folder", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "sd-blender-server: model '/nonexistent/folder' not found: no such file or folder /nonexistent/folder"
    assert "Traceback" not in result.stderr


def test_offline_hub_model_exits_2_saying_not_available_offline(tmp_path):
    result = subprocess.run(
        [*server_command(), "--model", "sd-blender-test/no-such-model", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "model 'sd-blender-test/no-such-model' is not available offline" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_bad_controlnet_option_is_a_usage_error():
    result = subprocess.run(
        [*server_command(), "--controlnet", "depth"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "expected TYPE=ID_OR_PATH" in result.stderr
