"""Hub ids, end to end, against a fake Hugging Face hub (fake_hub.py) serving the tiny model's
folders as repositories: the first start downloads into HF_HOME's standard cache layout (with
the hub's own progress bars on a console), `--offline` then loads from that cache without a
single request, an uncached model fails offline with one line, pickle-only weights are refused.

The server runs with a clean environment: no HF_*/HUGGINGFACE_*/TQDM_* variable of the user's
(a set HF_HUB_OFFLINE or HF_HUB_CACHE would change what is tested), HF_HOME a temporary folder
(nothing touches the user's cache) and HF_ENDPOINT the fake hub.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import struct
import subprocess
import tempfile
import termios
import threading
from pathlib import Path

import httpx
import pytest
import torch
from live_server import LiveServer, _wait_for_health, free_port, server_command
from safetensors.torch import load_file
from sd_blender_server.tiny import controlnet_dir, ensure_tiny_model
from server_helpers import png_base64, run_job, submit, wait_finished

from fake_hub import FakeHub

PIPELINE = "sd-blender-test/tiny-pipeline"
DEPTH = "sd-blender-test/tiny-depth"
PICKLE = "sd-blender-test/tiny-normal-pickle"  # a ControlNet with only diffusion_pytorch_model.bin
MISSING = "sd-blender-test/never-downloaded"
JOB = {"prompt": "a cube", "width": 64, "height": 64, "steps": 2, "seed": 1}


def _cache_folder(hf_home: Path, repo_id: str) -> Path:
    return hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))


def _server_env(hub: FakeHub, hf_home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("HF_", "HUGGINGFACE", "TQDM_")) and key.upper() not in ("NO_PROXY",)
    }
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="0",  # explicit: online unless --offline says otherwise
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        COLUMNS="120",
    )
    return env


@contextlib.contextmanager
def _server(*args: str, env: dict[str, str], console: bool = False):
    """A server on a free port with `args`; with `console`, its stdout and stderr are a
    pseudo-terminal (as in a user's shell), so tqdm draws its bars; its output goes to a log."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="sd_blender_hub_log_")) / "server.log"
    command = [*server_command(), "--host", "127.0.0.1", "--port", str(port), *args]
    reader = None
    if console:
        primary, secondary = pty.openpty()
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env)
        os.close(secondary)

        def copy() -> None:
            with open(log_path, "ab", buffering=0) as log:
                while True:
                    try:
                        data = os.read(primary, 65536)
                    except OSError:  # EIO: the child closed the terminal
                        break
                    if not data:
                        break
                    log.write(data)
            os.close(primary)

        log_path.touch()
        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
    else:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_for_health(server, 120)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if reader is not None:
            reader.join(timeout=10)


def _default_base(models: dict) -> dict:
    return next(item for item in models["base_models"] if item["default"])


def _lines(text: str) -> list[str]:
    """Output split as a terminal shows it: tqdm redraws a line after each carriage return."""
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


@pytest.fixture(scope="module")
def hub(tiny_cache, tmp_path_factory):
    model = ensure_tiny_model(tiny_cache)
    pickle_folder = tmp_path_factory.mktemp("pickle_controlnet")
    normal = controlnet_dir(model, "normal")
    (pickle_folder / "config.json").write_bytes((normal / "config.json").read_bytes())
    torch.save(load_file(normal / "diffusion_pytorch_model.safetensors"), pickle_folder / "diffusion_pytorch_model.bin")
    with FakeHub() as fake:
        fake.add_repo(PIPELINE, model / "pipeline")
        fake.add_repo(DEPTH, controlnet_dir(model, "depth"))
        fake.add_repo(PICKLE, pickle_folder)
        fake.add_repo(MISSING, controlnet_dir(model, "seg"))
        yield fake


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(scope="module")
def first_start(hub, hf_home):
    """The first start of a server naming hub models, on a console: what it downloaded, logged,
    listed and ran. Stopped before the tests look, so later servers find the cache complete."""
    arguments = ("--model", PIPELINE, "--controlnet", f"depth={DEPTH}", "--controlnet", f"normal={PICKLE}")
    with _server(*arguments, env=_server_env(hub, hf_home), console=True) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            models = client.get("/v1/models").json()
            depth_job = run_job(client, **JOB, controls=[{"type": "depth", "image": png_base64(64, 64)}])
            pickle_job = wait_finished(
                client, submit(client, **JOB, controls=[{"type": "normal", "image": png_base64(64, 64)}])
            )
            models_after = client.get("/v1/models").json()
    return {
        "log": live.log(),
        "models": models,
        "models_after": models_after,
        "depth_job": depth_job,
        "pickle_job": pickle_job,
    }


def test_first_start_downloads_into_the_standard_hub_cache(first_start, hub, hf_home):
    for repo_id in (PIPELINE, DEPTH):
        folder = _cache_folder(hf_home, repo_id)
        commit = hub.repos[repo_id].commit
        assert (folder / "refs" / "main").read_text() == commit
        snapshot = folder / "snapshots" / commit
        expected = {path for path in hub.repos[repo_id].files}
        cached = {path.relative_to(snapshot).as_posix() for path in snapshot.rglob("*") if path.is_file()}
        assert cached == expected, repo_id
        for path in expected:  # the snapshot links to content-addressed blobs, as every hub tool expects
            assert (snapshot / path).resolve().parent == (folder / "blobs").resolve()
            assert (snapshot / path).read_bytes() == hub.repos[repo_id].files[path]
    assert not hub.unexpected


def test_first_start_logs_the_download_and_shows_the_hubs_progress_bars(first_start, hf_home):
    log = first_start["log"]
    cache = hf_home / "hub"
    for repo_id in (PIPELINE, DEPTH):
        assert f"downloading {repo_id} from the Hugging Face hub into {cache}" in log
    lines = _lines(log)
    # huggingface_hub's bars (tqdm on a terminal): the snapshot's file count and a file's bytes.
    assert any(re.search(r"Fetching \d+ files: +100%\|", line) for line in lines), log
    file_bar = re.compile(r"diffusion_pytorch_model\.safetensors: +100%\|.*\| [\d.]+[kM]?/[\d.]+[kM]?B? \[")
    assert any(file_bar.search(line) for line in lines), log
    # diffusers' own loading and step bars stay off outside --log-level debug.
    assert "Loading pipeline components" not in log
    assert "Traceback" not in log


def test_a_job_with_a_hub_controlnet_runs(first_start):
    job = first_start["depth_job"]
    assert job["state"] == "done"
    assert job["parameters"]["model"] == PIPELINE
    assert job["parameters"]["controls"][0]["model"] == DEPTH


def test_models_lists_the_hub_models(first_start):
    at_start = {item["type"]: item for item in first_start["models"]["controlnets"]}
    assert (at_start["depth"]["source"], at_start["depth"]["loaded"]) == ("hub", False)  # fetched on first use
    base = _default_base(first_start["models_after"])
    assert (base["name"], base["source"], base["location"], base["loaded"]) == (PIPELINE, "hub", PIPELINE, True)
    depth = next(item for item in first_start["models_after"]["controlnets"] if item["type"] == "depth")
    assert (depth["name"], depth["source"], depth["loaded"]) == (DEPTH, "hub", True)


def test_first_start_reports_the_family_read_from_the_downloaded_config(first_start):
    assert _default_base(first_start["models_after"])["family"] == "sd15"


def test_pickle_only_weights_are_refused_not_downloaded(first_start, hub, hf_home):
    job = first_start["pickle_job"]
    assert job["state"] == "failed"
    assert f"model '{PICKLE}'" in job["error"] and "\n" not in job["error"], job["error"]
    assert not [path for path in hub.downloads(PICKLE) if path.endswith(".bin")]
    assert not list(_cache_folder(hf_home, PICKLE).rglob("*.bin"))
    assert PICKLE not in [item["name"] for item in first_start["models_after"]["controlnets"] if item["loaded"]]


def test_pickle_only_weights_are_refused_saying_what_is_missing(first_start):
    error = first_start["pickle_job"]["error"]
    assert "not available offline" not in error
    assert "diffusion_pytorch_model.safetensors" in error


def test_offline_start_loads_from_the_cache_without_a_request(first_start, hub, hf_home):
    before = len(hub.requests)
    env = _server_env(hub, hf_home)
    with _server("--model", PIPELINE, "--controlnet", f"depth={DEPTH}", "--offline", env=env) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            job = run_job(client, **JOB, controls=[{"type": "depth", "image": png_base64(64, 64)}])
            base = _default_base(client.get("/v1/models").json())
        log = live.log()
    assert hub.requests[before:] == []
    assert job["parameters"]["controls"][0]["model"] == DEPTH
    assert (base["source"], base["family"], base["loaded"]) == ("hub", "sd15", True)  # from the cached configs
    assert "downloading" not in log


def test_offline_start_of_an_uncached_model_exits_2_without_a_request(hub, tmp_path):
    before = len(hub.requests)
    result = subprocess.run(
        [*server_command(), "--model", MISSING, "--offline", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env=_server_env(hub, tmp_path / "hf_home"),
    )
    assert hub.requests[before:] == []
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sd-blender-server: model '{MISSING}' is not available offline"), last
    assert "--offline" in last
    assert "Traceback" not in result.stderr


def test_start_with_the_hub_unreachable_exits_2_saying_so(hub, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**_server_env(hub, tmp_path / "hf_home"), "HF_ENDPOINT": endpoint}
    result = subprocess.run(
        [*server_command(), "--model", MISSING, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sd-blender-server: model '{MISSING}' is not available offline"), last
    # Checked with a direct connection first, not after huggingface_hub's retries.
    assert f"the hub could not be reached (cannot connect to {endpoint}: " in last, last
    assert "Retrying" not in result.stderr
    assert "Traceback" not in result.stderr
