"""Start a real sd_blender server (the tiny model unless told otherwise) for the tests, the benches
and the demo (tools/demo.py); standard library only.

Blender's test processes import this too, so it must not import torch, fastapi or httpx.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from waiting import wait_for

START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 30
# A job that keeps the tiny-model server busy long enough, on any machine, for the jobs submitted
# after it to be seen queued behind it: cancel it once done with.
JOB_AHEAD = {"prompt": "ahead", "width": 512, "height": 512, "steps": 150, "num_images": 8}


def server_command() -> list[str]:
    """$SD_BLENDER_SERVER (a console script path) if set, else this Python's installed package."""
    if os.environ.get("SD_BLENDER_SERVER"):
        return [os.environ["SD_BLENDER_SERVER"]]
    return [sys.executable, "-m", "sd_blender_server"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_for_health(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with status {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{server.log()}")


def _wait_for_live_replicas(server: LiveServer, count: int, timeout: float) -> None:
    """Until /health lists `count` live replicas: it says "ok" from the first one registered, while
    Serve may still be starting the others."""
    def live_replicas() -> int:
        with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
            return sum(replica["alive"] for replica in json.load(response).get("replicas", []))

    wait_for(lambda: live_replicas() >= count, f"{count} live replicas in /health", timeout=timeout)


def ray_server_options(replicas: int) -> tuple[tuple[str, ...], dict]:
    """The flags and environment of a server on a local Ray instance of its own: its files in a
    new temporary folder (a short path: Ray's sockets live there), no token file in the home folder."""
    ray_folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    return ("--ray", "--replicas", str(replicas)), {"RAY_TMPDIR": ray_folder, "RAY_AUTH_MODE": "disabled"}


@contextlib.contextmanager
def running_server(
    *extra_args: str, cache_dir: str | os.PathLike | None = None, env: dict | None = None, port: int | None = None,
    model: str | None = "tiny", log_path: Path | None = None, start_timeout: float = START_TIMEOUT_SECONDS,
):
    """A server on 127.0.0.1 (a free port unless given) with `--model MODEL` (None: the server's
    default), its output in log_path (a temporary file unless given); stopped (then killed) on exit."""
    port = port or free_port()
    command = [*server_command(), *(["--model", model] if model else []), "--host", "127.0.0.1", "--port", str(port),
               *extra_args]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    with serving(command, port, env, log_path, start_timeout) as server:
        yield server


@contextlib.contextmanager
def running_ray_server(replicas: int, *extra_args: str, start_timeout: float = START_TIMEOUT_SECONDS, **options):
    """running_server on a local Ray instance of its own (ray_server_options) with `replicas`
    replicas, yielded once every one of them is live."""
    flags, env = ray_server_options(replicas)
    with running_server(*extra_args, *flags, env=env, start_timeout=start_timeout, **options) as server:
        _wait_for_live_replicas(server, replicas, start_timeout)
        yield server


@contextlib.contextmanager
def serving(
    command: list[str], port: int, env: dict | None = None, log_path: Path | None = None,
    start_timeout: float = START_TIMEOUT_SECONDS,
):
    """`command`, a server answering on 127.0.0.1:port once healthy, its output in log_path (a
    temporary file unless given); stopped (then killed) on exit."""
    log_path = log_path or Path(tempfile.mkdtemp(prefix="sd_blender_server_log_")) / "server.log"
    with open(log_path, "wb") as log_file:
        # Its own process group: what it started (Ray's processes, with --ray) is stopped with it.
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_for_health(server, start_timeout)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (the server stops what it started), then SIGKILL for whatever of its group is left."""
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
