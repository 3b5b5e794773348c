"""ControlNets skipped outside their step window (controlnet_window.py), against diffusers' stock
behaviour: the same engine job with each ControlNet's own forward gives the same image while the
ControlNet runs only on the steps of its window; and guess mode runs it on the conditional half of
the batch only. Real pipelines, the tiny model and the toy SDXL and Union models; the ControlNet's
real runs are counted at its input convolution."""
import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, ControlNetUnionModel
from model_builders import tiny_lora, toy_sdxl_folders, toy_union
from PIL import Image

from sd_blender_server.config import CONTROL_TYPES, ServerConfig
from sd_blender_server.controlnet_window import is_zero, skip_when_unscaled
from sd_blender_server.engine import GenerationEngine
from sd_blender_server.frame_request import FrameRequest
from sd_blender_server.request import ControlInput, GenerationRequest, LoraInput
from sd_blender_server.tiny import controlnet_dir, ensure_tiny_model

SIZE = 64


def pattern(seed: int) -> Image.Image:
    """A control (or init) image with structure: a ControlNet's residuals depend on it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE // 8, SIZE // 8, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def toy_models(tiny_cache, tmp_path_factory):
    """A models folder: the toy SDXL (`toy-xl`) with its ControlNet (`toy_xl_depth`), a ControlNet
    Union (`toy_union_promax`), and a LoRA for the tiny model (`tiny_style`)."""
    models = tmp_path_factory.mktemp("window_models") / "models"
    tiny = ensure_tiny_model(tiny_cache)
    toy_sdxl_folders(tiny, models)
    toy_union(models / "checkpoints" / "toy-xl" / "unet", models / "controlnet" / "toy_union_promax", num_control_type=8)
    (models / "loras").mkdir()
    tiny_lora(tiny / "pipeline", models / "loras" / "tiny_style.safetensors", seed=1)
    return models


@pytest.fixture(scope="module")
def engine(tiny_cache, toy_models):
    config = ServerConfig(
        model="tiny", device="cpu", cache_dir=str(tiny_cache), controlnets=dict.fromkeys(CONTROL_TYPES, "tiny"),
        models_dirs=(str(toy_models),),
    )
    return GenerationEngine(config)


def job(*windows, control_model=None, model=None, **options) -> GenerationRequest:
    """A 4-step job with one control (depth, normal, ...) per (start, end) window."""
    controls = tuple(
        ControlInput(type=control_type, image=pattern(index), model=control_model, start=start, end=end)
        for index, (control_type, (start, end)) in enumerate(zip(CONTROL_TYPES, windows))
    )
    request = GenerationRequest(prompt="a house", seed=5, steps=4, width=SIZE, height=SIZE, controls=controls,
                                model=model, preview_every=0)
    return dataclasses.replace(request, **options)


@contextlib.contextmanager
def counted_runs(controlnets) -> Iterator[list[list[int]]]:
    """For each ControlNet, the batch size of each of its real runs while the block runs."""
    runs = [[] for _ in controlnets]
    hooks = [
        controlnet.conv_in.register_forward_hook(lambda module, args, output, seen=seen: seen.append(len(args[0])))
        for controlnet, seen in zip(controlnets, runs)
    ]
    try:
        yield runs
    finally:
        for hook in hooks:
            hook.remove()


@contextlib.contextmanager
def stock_forward(controlnets) -> Iterator[None]:
    """The ControlNets' own forward (diffusers' stock behaviour) while the block runs."""
    for controlnet in controlnets:
        del controlnet.forward
    try:
        yield
    finally:
        for controlnet in controlnets:
            skip_when_unscaled(controlnet)


def loaded_controlnets(engine, request: GenerationRequest) -> list:
    """The ControlNets a request runs, loaded (one each: a Union ControlNet serves several controls)."""
    controlnets = [engine._runner.controlnet(key, source) for key, source in engine._plan(request).controlnets]
    return list(dict.fromkeys(controlnets))


def generate(engine, request) -> tuple[np.ndarray, list[list[int]], np.ndarray, list[list[int]]]:
    """The job's pixels and ControlNet runs with the fast path, then with the stock forward."""
    first = request.frames[0] if isinstance(request, FrameRequest) else request
    controlnets = loaded_controlnets(engine, first)
    outcomes = []
    for forward in (contextlib.nullcontext, stock_forward):
        with forward(controlnets), counted_runs(controlnets) as runs:
            images = engine.generate(request).images
        outcomes += [np.stack([np.asarray(image, dtype=np.int16) for image in images]), runs]
    return tuple(outcomes)


def in_window(start: float, end: float, steps: int) -> int:
    """How many of `steps` steps diffusers runs a control of this window on (controlnet_keep)."""
    return sum(1 for step in range(steps) if start <= step / steps and (step + 1) / steps <= end)


def assert_same_image(fast: np.ndarray, stock: np.ndarray) -> None:
    assert fast.shape == stock.shape
    assert np.abs(fast - stock).max() <= 1


@pytest.mark.parametrize("windows", [[(0.0, 0.5)], [(0.5, 1.0)], [(0.0, 0.5), (0.5, 1.0)], [(0.25, 0.75), (0.0, 1.0)]])
def test_a_control_runs_its_window_only_and_the_image_is_stocks(engine, windows):
    fast, fast_runs, stock, stock_runs = generate(engine, job(*windows))
    assert_same_image(fast, stock)
    assert [len(runs) for runs in stock_runs] == [4] * len(windows)
    assert [len(runs) for runs in fast_runs] == [in_window(*window, 4) for window in windows]


def test_the_window_of_an_img2img_job_spans_the_steps_it_runs(engine):
    """Strength 0.5 of 8 steps runs 4: the window is a share of those."""
    request = job((0.0, 0.5), steps=8, init_image=pattern(9), strength=0.5)
    fast, fast_runs, stock, stock_runs = generate(engine, request)
    assert_same_image(fast, stock)
    assert [len(runs) for runs in stock_runs] == [4] and [len(runs) for runs in fast_runs] == [2]


def test_an_inpainting_job_with_loras_tiling_and_previews_keeps_the_window(engine):
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    request = job(
        (0.5, 1.0), init_image=pattern(9), mask_image=mask, strength=1.0, loras=(LoraInput("tiny_style", 0.8),),
        tiling="xy", preview_every=1,
    )
    fast, fast_runs, stock, stock_runs = generate(engine, request)
    assert_same_image(fast, stock)
    assert [len(runs) for runs in fast_runs] == [2]


def test_a_frame_jobs_cross_frame_attention_keeps_the_window(engine):
    frames = tuple(job((0.0, 0.5), seed=3, controls=(ControlInput("depth", pattern(index), end=0.5),)) for index in range(2))
    request = FrameRequest(frames=frames, anchor=frames[0])
    fast, fast_runs, stock, stock_runs = generate(engine, request)
    assert_same_image(fast, stock)
    assert fast_runs == [[6, 6]] and len(stock_runs[0]) == 4  # anchor and two frames, twice for guidance


@pytest.mark.parametrize("control_model", ["toy_xl_depth", "toy_union_promax"])
def test_sdxl_and_union_controls_run_their_window_only(engine, control_model):
    fast, fast_runs, stock, stock_runs = generate(engine, job((0.0, 0.5), model="toy-xl", control_model=control_model))
    assert_same_image(fast, stock)
    assert [len(runs) for runs in fast_runs] == [2] and [len(runs) for runs in stock_runs] == [4]


def test_a_union_running_several_controls_runs_every_step_as_stock_does(engine):
    """Out of every window, a Union ControlNet running several controls still adds the residuals of
    the latents alone (diffusers scales only its conditions): they are not zero, so it runs."""
    request = job((0.0, 0.5), (0.0, 0.5), model="toy-xl", control_model="toy_union_promax")
    fast, fast_runs, stock, stock_runs = generate(engine, request)
    assert_same_image(fast, stock)
    assert fast_runs == stock_runs and len(fast_runs[0]) == 4


@pytest.mark.parametrize(
    "model, control_model", [(None, None), ("toy-xl", "toy_xl_depth"), ("toy-xl", "toy_union_promax")]
)
@pytest.mark.parametrize("kind", ["txt2img", "img2img", "inpaint"])
def test_guess_mode_runs_the_controlnet_on_the_conditional_half_only(engine, model, control_model, kind):
    """With guidance the UNet's batch is twice the images; in guess mode the ControlNet sees one half."""
    images = {"img2img": {"init_image": pattern(9), "strength": 1.0},
              "inpaint": {"init_image": pattern(9), "mask_image": Image.new("L", (SIZE, SIZE), 255), "strength": 1.0}}
    request = job((0.0, 1.0), model=model, control_model=control_model, steps=2, num_images=2, **images.get(kind, {}))
    (controlnet,) = loaded_controlnets(engine, request)
    batches = {}
    for guess_mode in (False, True):
        with counted_runs([controlnet]) as (runs,):
            engine.generate(dataclasses.replace(request, guess_mode=guess_mode))
        batches[guess_mode] = runs
    assert batches == {False: [4, 4], True: [2, 2]}


# --- the zero residuals themselves -----------------------------------------------------------------

def controlnet_inputs(controlnet, batch: int, height: int, width: int) -> dict:
    """Arguments of a forward on random latents of (height, width) and a control image 8 times that."""
    config, generator = controlnet.config, torch.Generator().manual_seed(0)
    inputs = {
        "sample": torch.randn(batch, config.in_channels, height, width, generator=generator),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(batch, 7, config.cross_attention_dim, generator=generator),
        "return_dict": False,
    }
    condition = torch.rand(batch, 3, 8 * height, 8 * width, generator=generator)
    if config.addition_embed_type == "text_time":
        text = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, text, generator=generator),
                                       "time_ids": torch.tensor([[height * 8, width * 8, 0, 0, height * 8, width * 8]] * batch)}
    if isinstance(controlnet, ControlNetUnionModel):
        control_type = torch.zeros(batch, config.num_control_type)
        control_type[:, 1] = 1
        return {**inputs, "controlnet_cond": [condition], "control_type": control_type, "control_type_idx": [1]}
    return {**inputs, "controlnet_cond": condition}


def load_controlnets(tiny_cache, toy_models) -> dict:
    depth = controlnet_dir(ensure_tiny_model(tiny_cache), "depth")
    pooled = ControlNetModel.from_config({**ControlNetModel.load_config(depth), "global_pool_conditions": True,
                                          "downsample_padding": 0})
    return {
        "tiny": ControlNetModel.from_pretrained(depth),
        "pooled, unpadded": pooled,
        "toy sdxl": ControlNetModel.from_pretrained(toy_models / "controlnet" / "toy_xl_depth"),
        "toy union": ControlNetUnionModel.from_pretrained(toy_models / "controlnet" / "toy_union_promax"),
    }


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (5, 12)])
@pytest.mark.parametrize("name", ["tiny", "pooled, unpadded", "toy sdxl", "toy union"])
def test_the_zero_residuals_are_the_real_forwards_shapes_without_running_it(tiny_cache, toy_models, name, size):
    controlnet = load_controlnets(tiny_cache, toy_models)[name].eval()
    inputs = controlnet_inputs(controlnet, 2, *size)
    scale = [0.0] if isinstance(controlnet, ControlNetUnionModel) else 0.0
    with torch.inference_mode():
        stock_down, stock_middle = controlnet(**inputs, conditioning_scale=scale, guess_mode=True)
        skip_when_unscaled(controlnet)
        with counted_runs([controlnet]) as (runs,):
            down, middle = controlnet(**inputs, conditioning_scale=scale, guess_mode=True)
            output = controlnet(**{**inputs, "return_dict": True}, conditioning_scale=scale, guess_mode=True)
        assert runs == []
        assert [(tensor.shape, tensor.dtype) for tensor in [*down, middle]] == [
            (tensor.shape, tensor.dtype) for tensor in [*stock_down, stock_middle]
        ]
        for tensor, stock in zip([*down, middle, *output.down_block_res_samples, output.mid_block_res_sample],
                                 [*stock_down, stock_middle] * 2):
            assert torch.equal(tensor, stock) and not tensor.any()
        with counted_runs([controlnet]) as (runs,):
            controlnet(**inputs, conditioning_scale=[0.5] if name == "toy union" else 0.5)
        assert runs == [2]


def test_installing_twice_wraps_once(tiny_cache):
    controlnet = ControlNetModel.from_pretrained(controlnet_dir(ensure_tiny_model(tiny_cache), "depth"))
    forward = skip_when_unscaled(controlnet).forward
    assert skip_when_unscaled(controlnet).forward is forward


@pytest.mark.parametrize(
    "scale, zero",
    [(0.0, True), (0, True), (0.3, False), ([0.0, 0.0], True), ([0.0, 1.0], False), (torch.zeros(3), True),
     (torch.tensor([0.0, 0.2]), False)],
)
def test_zero_scales(scale, zero):
    assert is_zero(scale) is zero


@pytest.mark.parametrize("name", ["tiny", "toy union"])
def test_a_compiled_controlnet_compiles_once_for_every_weight_and_keeps_its_window(tiny_cache, toy_models, name):
    """--compile: the window's test and the weight stay out of the ControlNet's graph, so a weight
    changed (or a window opening) reuses the graph, and outside the window nothing runs. Residuals
    as the eager model's, within float tolerance."""
    from torch._dynamo.utils import counters

    from sd_blender_server.controlnet_window import compile_in_window

    eager, compiled = (load_controlnets(tiny_cache, toy_models)[name].eval() for _ in range(2))
    inputs = controlnet_inputs(eager, 2, 8, 8)
    compile_in_window(compiled, "default")
    runs, real_forward = [], compiled.forward_in_window
    compiled.forward_in_window = lambda **options: runs.append(options["conditioning_scale"]) or real_forward(**options)
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        for scale in (1.0, 0.0, 0.5, 0.8, 0.0):
            down, middle = compiled(**inputs, conditioning_scale=scale)
            eager_down, eager_middle = eager(**inputs, conditioning_scale=scale)
            for got, want in zip([*down, middle], [*eager_down, eager_middle]):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] - graphs == 1
    assert runs == [1.0, 0.5, 0.8]
