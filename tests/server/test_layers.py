"""The server's layers: the engine knows nothing of HTTP and the job queue nothing of torch, so the
engine can sit behind uvicorn or behind anything else that feeds it. Checked in a fresh
interpreter: what importing a module really loads."""
import subprocess
import sys


def loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return set(result.stdout.split())


def test_the_engine_loads_nothing_of_http():
    http = {"fastapi", "starlette", "uvicorn", "sd_blender_server.api", "sd_blender_server.schemas"}
    assert not http & loaded_by("sd_blender_server.engine")


def test_the_job_queue_loads_neither_torch_nor_the_engine():
    assert not {"torch", "diffusers", "fastapi", "sd_blender_server.engine"} & loaded_by("sd_blender_server.jobs")
