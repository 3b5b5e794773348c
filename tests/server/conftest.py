"""A live server (uvicorn subprocess, tiny model) shared by the whole session."""
from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live_server import running_server  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def server(tiny_cache):
    """On the CPU (a test asserts it), whatever devices the machine has."""
    with running_server("--device", "cpu", cache_dir=tiny_cache) as live:
        yield live


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
