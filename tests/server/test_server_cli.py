"""The command line: token, start-up failures."""
import subprocess

import httpx
from live_server import running_server, server_command


def test_token_is_required_on_every_route_but_health(tiny_cache):
    with running_server(cache_dir=tiny_cache, env={"SD_BLENDER_TOKEN": "s3cret"}) as live:
        assert httpx.get(live.url + "/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = httpx.get(live.url + "/v1/models", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["detail"] == "missing or wrong bearer token"
        assert httpx.get(live.url + "/v1/jobs/abc", headers={}).status_code == 401
        authorized = {"Authorization": "Bearer s3cret"}
        assert httpx.get(live.url + "/v1/models", headers=authorized).status_code == 200
        assert httpx.get(live.url + "/v1/jobs/abc", headers=authorized).status_code == 404


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
