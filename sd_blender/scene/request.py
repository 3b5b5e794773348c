"""The scene's settings and passes → the body of POST /v1/jobs (docs/api.md)."""
from ..core.limits import request_problems
from ..core.pass_options import PassOptions
from ..core.png import encode_png
from ..core.request import (
    PREVIEW_EVERY, ControlImage, GenerationSettings, build_job_request, control_type_for_pass, round_to_multiple_of_8,
)
from .depth_range import depth_range
from .passes import render_control_images

def generation_size(scene):
    """(width, height) of passes and generation: both rounded to a multiple of 8."""
    settings = scene.sd_blender
    if settings.use_scene_resolution:
        scale = scene.render.resolution_percentage / 100.0
        width, height = scene.render.resolution_x * scale, scene.render.resolution_y * scale
    else:
        width, height = settings.width, settings.height
    return round_to_multiple_of_8(width), round_to_multiple_of_8(height)


def checked_units(settings):
    """The control units switched on in the panel; raises ValueError for a unit that starts after it ends."""
    units = [unit for unit in settings.control_units if unit.enabled]
    for unit in units:
        if unit.start >= unit.end:
            raise ValueError(f"{unit.kind} control: Start ({unit.start:.2f}) must be below End ({unit.end:.2f})")
    return units


def enabled_loras(settings):
    """(name, weight) of the LoRAs switched on in the panel; a row with no name yet is left out."""
    return tuple((lora.name.strip(), lora.weight) for lora in settings.loras if lora.enabled and lora.name.strip())


def check_within_limits(scene, limits):
    """Raises ValueError saying what the scene's request would break of the server's limits (a
    GET /v1/limits answer); nothing to check while they are not known (None)."""
    if limits is None:
        return
    settings = scene.sd_blender
    problems = request_problems(
        limits, *generation_size(scene), settings.steps, settings.num_images,
        [unit.weight for unit in checked_units(settings)], [weight for _, weight in enabled_loras(settings)],
        settings.scheduler,
    )
    if problems:
        raise ValueError("; ".join(problems))


def family_problem(settings, models):
    """What to fix when an enabled LoRA is for another family than the base model, as the model
    list fetched from the server knows them (models: a core.model_list.ModelList); else None."""
    return models.lora_family_problem(settings.base_model.strip(), [name for name, _ in enabled_loras(settings)])


def pass_options(scene, kinds):
    """How the passes `kinds` are drawn, as the scene's settings say; reads, never writes."""
    settings = scene.sd_blender
    return PassOptions(
        depth_range=depth_range(scene) if "depth" in kinds else None,
        lineart_threshold=settings.lineart_threshold,
        canny_threshold=settings.canny_threshold,
        openpose_stick_scale=settings.openpose_stick_scale,
    )


def request_pass_kinds(settings):
    """The passes a request renders: its enabled units', and color for img2img."""
    unit_kinds = [unit.kind for unit in settings.control_units if unit.enabled]
    return list(dict.fromkeys(unit_kinds + (["color"] if settings.use_color_init else [])))


def prepare_request(scene, limits=None):
    """Check the request against the server's limits (when known), render the passes it needs and
    build the POST /v1/jobs body. Runs on the UI thread. A Shot depth range must be measured
    first (depth_range.measure_shot_if_needed)."""
    check_within_limits(scene, limits)
    settings = scene.sd_blender
    width, height = generation_size(scene)
    tileable = settings.apply_to == "MATERIAL"  # a material's tile: no view of the scene conditions it
    units = [] if tileable else checked_units(settings)
    loras = enabled_loras(settings)
    kinds = [] if tileable else request_pass_kinds(settings)
    color_init = settings.use_color_init and not tileable
    images = render_control_images(scene, kinds, width, height, pass_options(scene, kinds)) if kinds else {}
    controls = tuple(
        ControlImage(
            control_type_for_pass(unit.kind), encode_png(images[unit.kind]), unit.weight, unit.start, unit.end,
            unit.model.strip() or None,
        )
        for unit in units
    )
    return build_job_request(GenerationSettings(
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        seed=None if settings.use_random_seed else settings.seed,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        width=width,
        height=height,
        num_images=settings.num_images,
        scheduler=settings.scheduler,
        controls=controls,
        guess_mode=settings.guess_mode,
        init_png=encode_png(images["color"]) if color_init else None,
        strength=settings.init_strength,
        model=settings.base_model.strip() or None,
        loras=loras,
        tiling="xy" if tileable else None,
        preview_every=PREVIEW_EVERY if settings.use_previews else 0,
    ))
