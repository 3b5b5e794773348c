"""Operators. Generate renders the passes, starts a worker thread and returns at once; a timer
on the UI thread watches the job and applies the result when it arrives."""
from dataclasses import dataclass

import bpy

from . import generation
from .core.client import ServerClient
from .core.job import DONE, GenerationJob
from .passes import PASS_KINDS, PassError, render_control_images, show_in_blender
from .preferences import server_settings
from .properties import APPLY_TARGETS, generation_size

POLL_INTERVAL = 0.2


@dataclass
class ActiveGeneration:
    job: GenerationJob
    scene_name: str
    apply_to: str
    object_names: tuple
    outcome: str = ""  # set once the result was applied (or could not be)


_generation: ActiveGeneration | None = None


def current_generation():
    return _generation


def is_running():
    return _generation is not None and not _generation.job.snapshot().finished


def finish_generation(active, snapshot):
    """Bring a finished job's result into Blender (UI thread). Returns a one-line outcome."""
    if snapshot.state != DONE:
        return snapshot.message
    scene = bpy.data.scenes.get(active.scene_name)
    if scene is None:
        return f"{snapshot.message} (scene {active.scene_name!r} is gone: nothing applied)"
    try:
        images = generation.apply_results(scene, snapshot.result_paths, active.apply_to, active.object_names)
    except ValueError as error:
        return f"{snapshot.message}; not applied: {error}"
    _show_in_image_editors(images[0])
    return f"{snapshot.message}; opened {', '.join(image.name for image in images)}"


def _areas(area_type):
    for window in bpy.context.window_manager.windows:
        yield from (area for area in window.screen.areas if area.type == area_type)


def _redraw_sidebars():
    for area in _areas("VIEW_3D"):
        area.tag_redraw()


def _show_in_image_editors(image):
    for area in _areas("IMAGE_EDITOR"):
        area.spaces.active.image = image


def _selected_mesh_names(context):
    return tuple(obj.name for obj in context.selected_objects if obj.type == "MESH")


def poll_generation():
    """bpy.app.timers callback: None stops the timer."""
    active = _generation
    if active is None:
        return None
    snapshot = active.job.snapshot()
    _redraw_sidebars()
    if not snapshot.finished:
        return POLL_INTERVAL
    active.outcome = finish_generation(active, snapshot)
    print(f"sd_blender: {active.outcome}")
    return None


class SDBLENDER_OT_generate(bpy.types.Operator):
    """Render the control passes and generate an image on the sd_blender server"""

    bl_idname = "sd_blender.generate"
    bl_label = "Generate"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not is_running()

    def execute(self, context):
        global _generation
        scene = context.scene
        url, token = server_settings(context)
        try:
            job = generation.start_job(scene, ServerClient(url, token))
        except (PassError, ValueError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        _generation = ActiveGeneration(job, scene.name, scene.sd_blender.apply_to, _selected_mesh_names(context))
        bpy.app.timers.register(poll_generation, first_interval=POLL_INTERVAL)
        self.report({"INFO"}, f"sent to {url}")
        return {"FINISHED"}


class SDBLENDER_OT_cancel(bpy.types.Operator):
    """Cancel the generation in progress"""

    bl_idname = "sd_blender.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return is_running()

    def execute(self, context):
        _generation.job.cancel()
        return {"FINISHED"}


class SDBLENDER_OT_preview_passes(bpy.types.Operator):
    """Render the control passes into images named "SD <pass>" to check them before generating"""

    bl_idname = "sd_blender.preview_passes"
    bl_label = "Preview Passes"

    def execute(self, context):
        scene = context.scene
        width, height = generation_size(scene)
        try:
            images = render_control_images(scene, PASS_KINDS, width, height)
        except PassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        names = [show_in_blender(kind, pixels).name for kind, pixels in images.items()]
        self.report({"INFO"}, f"passes ready in the Image Editor: {', '.join(names)}")
        return {"FINISHED"}


class SDBLENDER_OT_apply_result(bpy.types.Operator):
    """Apply the last generated image again, as camera background or projected texture"""

    bl_idname = "sd_blender.apply_result"
    bl_label = "Apply Result"

    target: bpy.props.EnumProperty(
        name="Apply as",
        items=[item for item in APPLY_TARGETS if item[0] != "NONE"],
    )

    @classmethod
    def poll(cls, context):
        return _generation is not None and bool(_generation.job.snapshot().result_paths)

    def execute(self, context):
        paths = _generation.job.snapshot().result_paths
        try:
            generation.apply_results(context.scene, paths[:1], self.target, _selected_mesh_names(context))
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


CLASSES = (SDBLENDER_OT_generate, SDBLENDER_OT_cancel, SDBLENDER_OT_preview_passes, SDBLENDER_OT_apply_result)


def unregister_timer():
    if bpy.app.timers.is_registered(poll_generation):
        bpy.app.timers.unregister(poll_generation)
