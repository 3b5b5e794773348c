"""Inpainting through real HTTP: `mask_image` with `init_image` on SD 1.5 (the tiny model) and SDXL
(a toy), with and without a ControlNet, on regular checkpoints (4-channel UNets) and on inpainting
checkpoints (9-channel UNets: an SD 1.5 single file in the original layout, an SDXL folder)."""
import httpx
import numpy as np
import pytest
from live_server import running_server
from model_builders import TINY_METADATA, inpainting_folder, save_ldm_single_file, toy_sdxl_folders
from PIL import Image
from sd_blender_server.tiny import ensure_tiny_model
from server_helpers import fetch_image, field_error, image_base64, png_base64, run_job

SIZE = 64
JOB = {"width": SIZE, "height": SIZE, "steps": 4, "seed": 5, "strength": 0.9}


INIT = Image.fromarray(np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
# The left half is repainted, the right half kept.
MASK = Image.new("L", (SIZE, SIZE), 0)
MASK.paste(255, (0, 0, SIZE // 2, SIZE))
REPAINTED, KEPT = np.s_[:, : SIZE // 2], np.s_[:, SIZE // 2 :]


@pytest.fixture(scope="module")
def models(tiny_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("inpainting") / "models"
    tiny = ensure_tiny_model(tiny_cache)
    toy_sdxl_folders(tiny, root)
    checkpoints = root / "checkpoints"
    inpainting_folder(checkpoints / "toy-xl", checkpoints / "toy-xl-inpainting", seed=1)
    folder = inpainting_folder(tiny / "pipeline", root.parent / "tiny-inpainting", seed=2)
    save_ldm_single_file(folder, checkpoints / "tiny-inpainting.safetensors", metadata=TINY_METADATA)
    return root


@pytest.fixture(scope="module")
def models_client(models, tiny_cache):
    with running_server("--models-dir", str(models), cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=120) as client:
            yield client


def _inpainted(client, **body) -> tuple[np.ndarray, dict]:
    status = run_job(client, **{**JOB, "init_image": image_base64(INIT), "mask_image": image_base64(MASK), **body})
    return np.asarray(fetch_image(client, status["images"][0]), dtype=np.int16), status["parameters"]


def test_inpainting_checkpoints_are_listed_as_base_models(models_client):
    listed = models_client.get("/v1/models").json()
    assert {"tiny-inpainting", "toy-xl-inpainting"} <= {item["name"] for item in listed["base_models"]}
    assert listed["refused"] == []


@pytest.mark.parametrize(
    "model, control",
    [
        ("tiny", None),
        ("tiny", {"type": "depth"}),
        ("tiny-inpainting", None),
        ("tiny-inpainting", {"type": "depth"}),
        ("toy-xl", None),
        ("toy-xl", {"type": "depth", "model": "toy_xl_depth"}),
        ("toy-xl-inpainting", None),
        ("toy-xl-inpainting", {"type": "depth", "model": "toy_xl_depth"}),
    ],
)
def test_black_is_kept_and_white_repainted(models_client, model, control):
    controls = [{**control, "image": png_base64(SIZE, SIZE, (90, 90, 90))}] if control else []
    pixels, parameters = _inpainted(models_client, model=model, controls=controls)
    init = np.asarray(INIT, dtype=np.int16)
    assert np.array_equal(pixels[KEPT], init[KEPT])  # the init image's own pixels
    assert np.abs(pixels[REPAINTED] - init[REPAINTED]).mean() > 20
    assert (parameters["mask"], parameters["strength"], parameters["model"]) == (True, 0.9, model)


def test_the_mask_changes_what_the_repainted_half_becomes(models_client):
    # An inpainting checkpoint sees the masked image: what it keeps changes what it paints.
    repainted = []
    for init in (INIT, Image.new("RGB", (SIZE, SIZE), (200, 30, 30))):
        pixels, _ = _inpainted(models_client, model="tiny-inpainting", init_image=image_base64(init))
        repainted.append(pixels[REPAINTED])
    assert not np.array_equal(repainted[0], repainted[1])


@pytest.mark.parametrize("model", ["tiny-inpainting", "toy-xl-inpainting"])
def test_an_inpainting_checkpoint_without_a_mask_repaints_everything(models_client, model):
    for body in ({}, {"init_image": image_base64(INIT), "strength": 0.9}):
        status = run_job(models_client, **{**JOB, "model": model, **body})
        assert "mask" not in status["parameters"]
        image = fetch_image(models_client, status["images"][0])
        assert image.size == (SIZE, SIZE)
        assert np.abs(np.asarray(image, dtype=np.int16) - np.asarray(INIT, dtype=np.int16)).mean() > 20


def _mask_as(mode: str) -> Image.Image:
    if mode == "LA":
        return Image.merge("LA", (MASK, Image.new("L", MASK.size, 128)))
    return MASK.convert(mode)


def test_masks_of_every_accepted_mode_give_the_same_image(client):
    images = set()
    for mode in ("1", "L", "LA", "RGB", "RGBA"):
        status = run_job(client, **JOB, init_image=image_base64(INIT), mask_image=image_base64(_mask_as(mode)))
        images.add(fetch_image(client, status["images"][0]).tobytes())
    assert len(images) == 1


def test_a_mask_needs_an_init_image_of_its_size(client):
    message = field_error(client.post("/v1/jobs", json={**JOB, "mask_image": image_base64(MASK)}), "mask_image")
    assert "needs init_image" in message
    small = image_base64(MASK.resize((32, 48)))
    message = field_error(client.post("/v1/jobs", json={**JOB, "init_image": image_base64(INIT), "mask_image": small}), "mask_image")
    assert "32x48" in message and f"{SIZE}x{SIZE}" in message


@pytest.mark.parametrize(
    "mask, mode",
    [
        (image_base64(MASK.convert("P")), "P"),
        (image_base64(MASK.convert("I;16")), "I;16"),
        (image_base64(MASK.convert("CMYK"), "JPEG"), "CMYK"),
    ],
)
def test_a_mask_of_another_mode_is_refused(client, mask, mode):
    response = client.post("/v1/jobs", json={**JOB, "init_image": image_base64(INIT), "mask_image": mask})
    message = field_error(response, "mask_image")
    assert f"mode {mode}" in message and "grayscale" in message
