"""The scene's side of a generation: settings + passes → job request; results → the scene."""
import os
import sys
import tempfile
import time

import bpy

from . import apply
from .core.frame_batch import FrameBatch
from .core.job import PANEL_RETRY, GenerationJob
from .core.png import encode_png
from .core.pass_options import PassOptions
from .core.request import ControlImage, GenerationSettings, build_job_request, control_type_for_pass
from .depth_range import depth_range
from .passes import render_control_images
from .properties import generation_size
from .saving import save_copy_whole


MAX_CONTROLS = 4  # the server's limits per job
MAX_LORAS = 8


def enabled_units(settings):
    """The control units switched on in the panel, checked so the server will accept them."""
    units = [unit for unit in settings.control_units if unit.enabled]
    if len(units) > MAX_CONTROLS:
        raise ValueError(f"{len(units)} control units are enabled; the server takes at most {MAX_CONTROLS}")
    for unit in units:
        if unit.start >= unit.end:
            raise ValueError(f"{unit.kind} control: Start ({unit.start:.2f}) must be below End ({unit.end:.2f})")
    return units


def enabled_loras(settings):
    """(name, weight) of the LoRAs switched on in the panel; a row with no name yet is left out."""
    return tuple((lora.name.strip(), lora.weight) for lora in settings.loras if lora.enabled and lora.name.strip())


def checked_loras(settings):
    """The enabled LoRAs, checked so the server will accept them."""
    loras = enabled_loras(settings)
    if len(loras) > MAX_LORAS:
        raise ValueError(f"{len(loras)} LoRAs are enabled; the server takes at most {MAX_LORAS}: switch some off")
    return loras


def family_problem(settings, models):
    """What to fix when an enabled LoRA is for another family than the base model, as the model
    list fetched from the server knows them (models: a core.model_list.ModelList); else None."""
    return models.lora_family_problem(settings.base_model.strip(), [name for name, _ in enabled_loras(settings)])


def pass_options(scene, width, height):
    settings = scene.sd_blender
    return PassOptions(
        depth_range=depth_range(scene, width, height),
        lineart_threshold=settings.lineart_threshold,
        canny_threshold=settings.canny_threshold,
        openpose_stick_scale=settings.openpose_stick_scale,
    )


def prepare_request(scene):
    """Render the passes the request needs and build the POST /v1/jobs body. Runs on the UI thread."""
    settings = scene.sd_blender
    width, height = generation_size(scene)
    units = enabled_units(settings)
    loras = checked_loras(settings)
    kinds = list(dict.fromkeys([unit.kind for unit in units] + (["color"] if settings.use_color_init else [])))
    images = render_control_images(scene, kinds, width, height, pass_options(scene, width, height)) if kinds else {}
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
        init_png=encode_png(images["color"]) if settings.use_color_init else None,
        strength=settings.init_strength,
        model=settings.base_model.strip() or None,
        loras=loras,
    ))


def output_directory():
    """Results go next to the .blend, in a folder "sd_blender"; a temp folder for an unsaved file."""
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), "sd_blender")
    return os.path.join(tempfile.gettempdir(), "sd_blender")


def scene_file_stem(scene):
    blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "untitled"
    return f"{blend}_{scene.name}"


def result_file_stem(scene):
    return f"{scene_file_stem(scene)}_{time.strftime('%Y%m%d-%H%M%S')}"


def frame_file_stem(scene, frame):
    """A frame's result is <blend>_<scene>_<frame>: the frame number last, as image sequences want."""
    return f"{scene_file_stem(scene)}_{frame:04d}"


def frame_paths(scene, frames, output_dir=None):
    """Where the results of `frames` go, in order."""
    folder = output_dir or output_directory()
    return [os.path.join(folder, frame_file_stem(scene, frame) + ".png") for frame in frames]


def frames_depth_advice(settings):
    """A warning for frames whose depth range is measured per frame, else None."""
    if settings.depth_range_mode == "AUTO" and any(unit.enabled and unit.kind == "depth" for unit in settings.control_units):
        return ("the depth range is measured per frame (Auto), so its scale can jump between frames: "
                "the Shot depth range keeps one range over the scene's frame range")
    return None


def frames_problem(scene):
    """What to fix before generating the scene's frames, or None."""
    if scene.sd_blender.num_images != 1:
        return "Generate Frames makes one image a frame: set Images to 1"
    if scene.camera is None:
        return "the scene has no active camera: add one and set it as the scene camera"
    return None


def start_frames(scene, server_url, token):
    """Generate the scene's frame range in a background process, on a copy of the file as it is
    now (unsaved changes included); returns a core.frame_batch.FrameBatch watching it."""
    frames = range(scene.frame_start, scene.frame_end + 1)
    blend_name = os.path.basename(bpy.data.filepath) or "untitled.blend"
    paths = frame_paths(scene, frames)  # named after this file, not the copy
    copy_folder = tempfile.mkdtemp(prefix="sd_blender_frames_")
    copy = os.path.join(copy_folder, blend_name)
    save_copy_whole(copy)
    arguments = ["generate", copy, "--scene", scene.name, "--frames", f"{frames.start}-{frames.stop - 1}",
                 "--out", os.path.dirname(paths[0]), "--server", server_url]
    # The token goes in the environment, not on the command line where other users see it.
    environment = {**os.environ, "SD_BLENDER_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    if bpy.app.binary_path:  # Blender's own binary, in the background, with this add-on's command
        command = [bpy.app.binary_path, "--background", "--command", "sd_blender", *arguments]
    else:  # Blender as a Python module (no binary): that Python, with this package
        package_folder = os.path.dirname(os.path.abspath(__file__))
        paths_before = [environment["PYTHONPATH"]] if environment.get("PYTHONPATH") else []
        environment["PYTHONPATH"] = os.pathsep.join([os.path.dirname(package_folder), *paths_before])
        command = [sys.executable, "-m", os.path.basename(package_folder), *arguments]
    return FrameBatch(command, paths, environment, temporary_folder=copy_folder).start()


def start_job(scene, client, output_dir=None, frame=None, how_to_retry=PANEL_RETRY):
    """Render passes now, then hand the network part to a worker thread; returns at once. A
    `frame`'s result is named after it (frame_file_stem), a still's after the time and seed.
    `how_to_retry` completes the messages of a lost job ("... then press Generate")."""
    job_request = prepare_request(scene)
    output_dir = output_dir or output_directory()
    if frame is None:
        return GenerationJob(client, job_request, output_dir, result_file_stem(scene), how_to_retry=how_to_retry).start()
    return GenerationJob(client, job_request, output_dir, frame_file_stem(scene, frame), seed_in_name=False,
                         how_to_retry=how_to_retry).start()


def apply_frames_as_background(scene, paths, first_frame):
    """Show the frames' results (one a frame, from first_frame on) as the camera's background,
    an image sequence that follows the timeline."""
    if scene.camera is None:
        raise ValueError("the scene has no active camera to show the frames behind")
    apply.apply_sequence_as_background(scene.camera, apply.load_image(paths[0]), first_frame, len(paths))


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
        depth_image = apply.projection_depth_image(scene, camera, images[0])  # one render for every mesh
        for mesh_object in meshes:
            apply.apply_as_projected_texture(scene, camera, mesh_object, images[0], depth_image)
    return images
