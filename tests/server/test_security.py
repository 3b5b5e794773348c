"""Who may use the server: loopback by default, a token for any other address, no CORS."""
import os
import subprocess

import httpx
import pytest
from live_server import free_port, running_server, server_command

TOKEN = "t0ken-for-tests"
REFUSAL = (
    "sd-blender-server: refusing to listen on {host} without a token: anyone who can reach it could use the GPU; "
    "set --token or $SD_BLENDER_TOKEN, or listen on 127.0.0.1"
)


@pytest.mark.parametrize(("host", "env_token"), [("0.0.0.0", None), ("192.168.1.20", None), ("0.0.0.0", ""), ("::", None)])
def test_other_address_without_token_exits_2_with_one_line(host, env_token):
    env = {key: value for key, value in os.environ.items() if key != "SD_BLENDER_TOKEN"}
    if env_token is not None:
        env["SD_BLENDER_TOKEN"] = env_token
    result = subprocess.run(
        [*server_command(), "--model", "tiny", "--host", host, "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [REFUSAL.format(host=host)]
    assert "ready" not in result.stdout


@pytest.fixture(scope="module")
def exposed_server(tiny_cache):
    """Every interface, with a token: it starts."""
    with running_server("--host", "0.0.0.0", "--token", TOKEN, cache_dir=tiny_cache) as live:
        yield live


def test_with_a_token_it_listens_on_every_interface(exposed_server):
    assert "sd_blender server ready on http://0.0.0.0:" in exposed_server.log()
    assert httpx.get(exposed_server.url + "/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"}],
)
def test_missing_or_wrong_token_is_401(exposed_server, headers):
    for method, path in [
        ("GET", "/v1/models"), ("GET", "/v1/limits"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/abc"),
        ("DELETE", "/v1/jobs/abc"),
    ]:
        response = httpx.request(method, exposed_server.url + path, headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json() == {"detail": "missing or wrong bearer token"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_right_token_is_served(exposed_server):
    with httpx.Client(base_url=exposed_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        assert client.get("/v1/models").status_code == 200
        created = client.post("/v1/jobs", json={"width": 64, "height": 64, "steps": 1})
        assert created.status_code == 202


def test_no_cors_headers(exposed_server):
    origin = {"Origin": "https://evil.example"}
    for response in [
        httpx.get(exposed_server.url + "/health", headers=origin),
        httpx.get(exposed_server.url + "/v1/models", headers={**origin, "Authorization": f"Bearer {TOKEN}"}),
        httpx.options(
            exposed_server.url + "/v1/jobs",
            headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"},
        ),
    ]:
        assert not any(name.lower().startswith("access-control-") for name in response.headers), response.headers
    assert response.status_code in (401, 405)
