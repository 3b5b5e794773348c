import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def client(tiny_cache):
    """A client of a live tiny-model server on 127.0.0.1, shared by the core tests."""
    from live_server import running_server
    from sd_blender.core.client import ServerClient

    with running_server(cache_dir=tiny_cache) as live:
        yield ServerClient(live.url)
