"""A live server (tiny model) shared by the whole session: one process (uvicorn), and the same
served by Ray Serve with two replicas; the tests that take `client` run against both."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live_server import running_ray_server, running_server  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session", params=["process", "ray"])
def server(request, tiny_cache):
    """On the CPU (a test asserts it), whatever devices the machine has; in one process, or on a
    local Ray instance (`--ray --replicas 2`)."""
    start = functools.partial(running_ray_server, 2) if request.param == "ray" else running_server
    with start("--device", "cpu", cache_dir=tiny_cache) as live:
        yield live


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="session")
def toy_models_client(tiny_cache, tmp_path_factory):
    """A client of a server with a models folder: the toy SDXL (`toy-xl`), its ControlNet (`toy_xl_depth`)
    and a ControlNet Union ProMax (`toy_union_promax`), and a LoRA for the tiny model (`tiny_style`)."""
    from model_builders import tiny_lora, toy_sdxl_folders, toy_union
    from sd_blender_server.tiny import ensure_tiny_model

    models = tmp_path_factory.mktemp("toy_models") / "models"
    tiny = ensure_tiny_model(tiny_cache)
    toy_sdxl_folders(tiny, models)
    toy_union(models / "checkpoints" / "toy-xl" / "unet", models / "controlnet" / "toy_union_promax", num_control_type=8)
    (models / "loras").mkdir()
    tiny_lora(tiny / "pipeline", models / "loras" / "tiny_style.safetensors", seed=1)
    with running_server("--device", "cpu", "--models-dir", str(models), cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client
