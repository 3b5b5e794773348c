"""Operators. Generate renders the passes, starts a worker thread and returns at once; a timer
on the UI thread watches the job and applies the result when it arrives."""
from dataclasses import dataclass

import bpy

from ..core.client import ServerClient
from ..core.job import DONE, GenerationJob
from ..scene import depth_range
from ..scene.apply import apply_results, film_transparent_note
from ..scene.jobs import start_job
from ..scene.passes import PASS_KINDS, PASSES, PassError, render_control_images, show_in_blender
from ..scene.request import family_problem, generation_size, pass_options, request_pass_kinds
from . import state
from .preferences import server_settings
from .properties import APPLY_TARGETS
from .watched import areas, redraw_sidebars

MODELS_REDRAW_INTERVAL = 0.2  # the sidebar is redrawn this often while the model list is fetched


@dataclass
class ActiveGeneration:
    job: GenerationJob
    scene_name: str
    apply_to: str
    object_names: tuple
    outcome: str = ""  # set once the result was applied (or could not be)
    file_changed: bool = False  # another file was opened while the job ran: its result is saved, not applied


def poll_generation():
    """bpy.app.timers callback: None stops the timer."""
    return state.generation.poll(lambda active: active.job.snapshot(), finish_generation)


def is_running():
    active = state.generation.active
    return active is not None and not active.job.snapshot().finished


def finish_generation(active, snapshot):
    """Bring a finished job's result into Blender (UI thread). Returns a one-line outcome."""
    if snapshot.state != DONE:
        return snapshot.message
    if active.file_changed:
        return f"{snapshot.message}; not applied: another file was opened while it ran"
    scene = bpy.data.scenes.get(active.scene_name)
    if scene is None:
        return f"{snapshot.message} (scene {active.scene_name!r} is gone: nothing applied)"
    try:
        images = apply_results(scene, snapshot.result_paths, active.apply_to, active.object_names)
    except ValueError as error:
        return f"{snapshot.message}; not applied: {error}"
    _show_in_image_editors(images[0])
    note = film_transparent_note(scene) if active.apply_to == "BACKGROUND" else ""
    return f"{snapshot.message}; opened {', '.join(image.name for image in images)}{note}"


def _show_in_image_editors(image):
    for area in areas("IMAGE_EDITOR"):
        area.spaces.active.image = image


def _measure_shot_if_needed(operator, scene, kinds):
    """The explicit step of a Shot depth range not yet measured over the frame range."""
    if depth_range.measure_shot_if_needed(scene, kinds, *generation_size(scene)):
        operator.report({"INFO"}, depth_range.measured_shot_text(scene))


def _selected_mesh_names(context):
    return tuple(obj.name for obj in context.selected_objects if obj.type == "MESH")


class SDBLENDER_OT_generate(bpy.types.Operator):
    """Render the control passes and generate an image on the sd_blender server"""

    bl_idname = "sd_blender.generate"
    bl_label = "Generate"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not is_running()

    def execute(self, context):
        scene = context.scene
        url, token = server_settings(context)
        problem = family_problem(scene.sd_blender, state.server_models)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        try:
            _measure_shot_if_needed(self, scene, request_pass_kinds(scene.sd_blender))
            job = start_job(scene, ServerClient(url, token), limits=state.server_models.limits)
        except (PassError, ValueError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        state.generation.start(ActiveGeneration(job, scene.name, scene.sd_blender.apply_to,
                                                _selected_mesh_names(context)), poll_generation)
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
        state.generation.active.job.cancel()
        return {"FINISHED"}


class SDBLENDER_OT_preview_passes(bpy.types.Operator):
    """Render the passes of the control units (every pass but color when there is none) into
    images named "SD <pass>", to check them before generating"""

    bl_idname = "sd_blender.preview_passes"
    bl_label = "Preview Passes"

    def execute(self, context):
        scene = context.scene
        width, height = generation_size(scene)
        unit_kinds = [unit.kind for unit in scene.sd_blender.control_units]
        kinds = list(dict.fromkeys(unit_kinds)) or [kind for kind in PASS_KINDS if kind != "color"]
        try:
            _measure_shot_if_needed(self, scene, kinds)
            images = render_control_images(scene, kinds, width, height, pass_options(scene, kinds))
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
        active = state.generation.active
        return active is not None and bool(active.job.snapshot().result_paths)

    def execute(self, context):
        paths = state.generation.active.job.snapshot().result_paths
        try:
            apply_results(context.scene, paths[:1], self.target, _selected_mesh_names(context))
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class SDBLENDER_OT_add_control_unit(bpy.types.Operator):
    """Add a ControlNet unit conditioning the generation on a pass"""

    bl_idname = "sd_blender.add_control_unit"
    bl_label = "Add Control Unit"
    bl_options = {"REGISTER", "UNDO"}

    kind: bpy.props.EnumProperty(name="Pass", items=PASSES)

    def execute(self, context):
        settings = context.scene.sd_blender
        unit = settings.control_units.add()
        unit.kind = self.kind
        settings.active_control_index = len(settings.control_units) - 1
        return {"FINISHED"}


class SDBLENDER_OT_remove_control_unit(bpy.types.Operator):
    """Remove the selected ControlNet unit"""

    bl_idname = "sd_blender.remove_control_unit"
    bl_label = "Remove Control Unit"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        settings = context.scene.sd_blender
        return 0 <= settings.active_control_index < len(settings.control_units)

    def execute(self, context):
        settings = context.scene.sd_blender
        settings.control_units.remove(settings.active_control_index)
        settings.active_control_index = max(0, min(settings.active_control_index, len(settings.control_units) - 1))
        return {"FINISHED"}


class SDBLENDER_OT_add_lora(bpy.types.Operator):
    """Add a LoRA to the generation"""

    bl_idname = "sd_blender.add_lora"
    bl_label = "Add LoRA"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.sd_blender.loras.add()
        return {"FINISHED"}


class SDBLENDER_OT_remove_lora(bpy.types.Operator):
    """Remove a LoRA from the generation"""

    bl_idname = "sd_blender.remove_lora"
    bl_label = "Remove LoRA"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty(min=0)

    def execute(self, context):
        loras = context.scene.sd_blender.loras
        if self.index >= len(loras):
            self.report({"ERROR"}, f"there is no LoRA {self.index} to remove")
            return {"CANCELLED"}
        loras.remove(self.index)
        return {"FINISHED"}


class SDBLENDER_OT_refresh_models(bpy.types.Operator):
    """Ask the server which base models, LoRAs and ControlNets it has (in the background: Blender does not wait)"""

    bl_idname = "sd_blender.refresh_models"
    bl_label = "Refresh Models"

    def execute(self, context):
        state.server_models.refresh(ServerClient(*server_settings(context)))
        bpy.app.timers.register(_redraw_when_models_arrive, first_interval=MODELS_REDRAW_INTERVAL)
        return {"FINISHED"}


def _redraw_when_models_arrive():
    redraw_sidebars()
    return MODELS_REDRAW_INTERVAL if state.server_models.fetching else None


class SDBLENDER_OT_measure_shot_depth(bpy.types.Operator):
    """Measure the nearest and farthest surface over the scene's frame range, for a depth pass
    that keeps its brightness through the animation"""

    bl_idname = "sd_blender.measure_shot_depth"
    bl_label = "Measure Shot"

    def execute(self, context):
        scene = context.scene
        try:
            depth_range.measure_shot_range(scene, *generation_size(scene))
        except PassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, depth_range.measured_shot_text(scene))
        return {"FINISHED"}


CLASSES = (
    SDBLENDER_OT_generate,
    SDBLENDER_OT_cancel,
    SDBLENDER_OT_preview_passes,
    SDBLENDER_OT_apply_result,
    SDBLENDER_OT_add_control_unit,
    SDBLENDER_OT_remove_control_unit,
    SDBLENDER_OT_add_lora,
    SDBLENDER_OT_remove_lora,
    SDBLENDER_OT_refresh_models,
    SDBLENDER_OT_measure_shot_depth,
)
