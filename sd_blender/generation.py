"""The scene's side of a generation: settings + passes → job request; results → the scene."""
import os
import tempfile
import time

import bpy

from . import apply
from .core.job import GenerationJob
from .core.png import encode_png
from .core.request import ControlImage, GenerationSettings, build_job_request
from .passes import render_control_images
from .properties import generation_size


def enabled_controls(settings):
    """[(kind, weight, start, end)] of the control units switched on in the panel."""
    if not settings.use_depth:
        return []
    return [("depth", settings.depth_weight, settings.depth_start, settings.depth_end)]


def prepare_request(scene):
    """Render the enabled passes and build the POST /v1/jobs body. Runs on the UI thread."""
    settings = scene.sd_blender
    width, height = generation_size(scene)
    units = enabled_controls(settings)
    for kind, _weight, start, end in units:
        if start >= end:
            raise ValueError(f"{kind} control: Start ({start:.2f}) must be below End ({end:.2f})")
    images = render_control_images(scene, [kind for kind, *_ in units], width, height) if units else {}
    controls = tuple(
        ControlImage(kind, encode_png(images[kind]), weight, start, end) for kind, weight, start, end in units
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
    ))


def output_directory():
    """Results go next to the .blend, in a folder "sd_blender"; a temp folder for an unsaved file."""
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), "sd_blender")
    return os.path.join(tempfile.gettempdir(), "sd_blender")


def result_file_stem(scene):
    blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "untitled"
    return f"{blend}_{scene.name}_{time.strftime('%Y%m%d-%H%M%S')}"


def start_job(scene, client, output_dir=None):
    """Render passes now, then hand the network part to a worker thread; returns at once."""
    job_request = prepare_request(scene)
    return GenerationJob(client, job_request, output_dir or output_directory(), result_file_stem(scene)).start()


def apply_results(scene, paths, apply_to, object_names):
    """Load the generated images into Blender and apply the first as asked. Returns the images."""
    images = [apply.load_image(path) for path in paths]
    if not images or apply_to == "NONE":
        return images
    camera = scene.camera
    if camera is None:
        raise ValueError("the scene has no active camera to apply the result through")
    if apply_to == "BACKGROUND":
        apply.apply_as_background(camera, images[0])
    elif apply_to == "TEXTURE":
        meshes = [bpy.data.objects[name] for name in object_names if name in bpy.data.objects]
        if not meshes:
            raise ValueError("select the mesh objects to texture before generating")
        for mesh_object in meshes:
            apply.apply_as_projected_texture(scene, camera, mesh_object, images[0])
    return images
