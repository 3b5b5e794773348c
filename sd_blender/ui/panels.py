"""The sidebar tab "SD" in the 3D Viewport."""
import bpy

from ..scene import depth_range, pose
from ..scene.live_preview import preview_icon
from ..scene.request import family_problem, generation_size
from . import frames, operators, state, texture
from .keypoint_overrides import draw_keypoint_overrides

PREVIEW_SCALE = 8  # the preview's height under the progress bar, in rows


class SDBLENDER_PT_generate(bpy.types.Panel):
    bl_idname = "SDBLENDER_PT_generate"
    bl_label = "Stable Diffusion"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SD"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.sd_blender
        layout.prop(settings, "prompt", text="")
        layout.prop(settings, "negative_prompt", text="", icon="REMOVE")
        self._draw_model(layout, settings)
        self._draw_sampling(layout, settings)
        self._draw_size(layout, context.scene, settings)
        self._draw_controls(layout, settings)
        layout.prop(settings, "apply_to")
        self._draw_progress(layout)

    @staticmethod
    def _draw_model(layout, settings):
        column = layout.column(align=True)
        row = column.row(align=True)
        row.prop(settings, "base_model")
        row.operator("sd_blender.refresh_models", text="", icon="FILE_REFRESH")
        column.label(text=state.server_models.status)
        for index, lora in enumerate(settings.loras):
            row = column.row(align=True)
            row.prop(lora, "enabled", text="")
            row.prop(lora, "name", text="")
            row.prop(lora, "weight", text="")
            row.operator("sd_blender.remove_lora", text="", icon="X").index = index
        column.operator("sd_blender.add_lora", icon="ADD")
        problem = family_problem(settings, state.server_models)
        if problem:
            column.label(text=problem, icon="ERROR")

    @staticmethod
    def _draw_sampling(layout, settings):
        column = layout.column(align=True)
        row = column.row(align=True)
        row.prop(settings, "use_random_seed", text="", icon="FILE_REFRESH")
        seed = row.row(align=True)
        seed.enabled = not settings.use_random_seed
        seed.prop(settings, "seed")
        row = column.row(align=True)
        row.prop(settings, "steps")
        row.prop(settings, "use_previews", toggle=True)
        column.prop(settings, "guidance_scale")
        column.prop(settings, "scheduler", text="")
        column.prop(settings, "num_images")

    @staticmethod
    def _draw_size(layout, scene, settings):
        column = layout.column(align=True)
        column.prop(settings, "use_scene_resolution")
        if not settings.use_scene_resolution:
            row = column.row(align=True)
            row.prop(settings, "width")
            row.prop(settings, "height")
        width, height = generation_size(scene)
        column.label(text=f"{width} x {height} px (rounded to a multiple of 8)", icon="INFO")

    @staticmethod
    def _draw_controls(layout, settings):
        box = layout.box()
        box.label(text="ControlNet units", icon="MODIFIER")
        if len(settings.control_units) == 0:
            box.label(text="No control: add the passes to condition on")
            row = box.row(align=True)
            for kind in ("depth", "normal", "openpose"):
                row.operator("sd_blender.add_control_unit", text=kind.capitalize()).kind = kind
        row = box.row()
        row.template_list(
            "SDBLENDER_UL_control_units", "", settings, "control_units", settings, "active_control_index", rows=3
        )
        buttons = row.column(align=True)
        buttons.operator_menu_enum("sd_blender.add_control_unit", "kind", text="", icon="ADD")
        buttons.operator("sd_blender.remove_control_unit", text="", icon="REMOVE")
        if 0 <= settings.active_control_index < len(settings.control_units):
            _draw_unit(box, settings.control_units[settings.active_control_index])
        box.prop(settings, "guess_mode")
        box.operator("sd_blender.preview_passes", icon="IMAGE_ZDEPTH")

    @staticmethod
    def _draw_progress(layout):
        active = state.generation.active
        if operators.is_running():
            snapshot = active.job.snapshot()
            row = layout.row(align=True)
            row.progress(factor=snapshot.fraction, type="BAR", text=snapshot.message or snapshot.state)
            row.operator("sd_blender.cancel", text="", icon="CANCEL")
            _draw_preview(layout, snapshot)
            return
        batch = state.frame_batch.active
        if frames.frames_running():
            _draw_batch_progress(layout, batch.batch, "sd_blender.cancel_frames")
            return
        row = layout.row(align=True)
        row.operator("sd_blender.generate", icon="RENDER_STILL")
        row.operator("sd_blender.generate_frames", icon="RENDER_ANIMATION")
        if batch is not None and batch.outcome:
            layout.label(text=batch.outcome)
        if active is not None and active.outcome:
            layout.label(text=active.outcome)
            if active.job.snapshot().result_paths:
                row = layout.row(align=True)
                row.operator("sd_blender.apply_result", text="Background").target = "BACKGROUND"
                row.operator("sd_blender.apply_result", text="Texture").target = "TEXTURE"


class _SubPanel:
    """A closed section under the main panel, in the 3D view's sidebar tab SD."""

    bl_parent_id = "SDBLENDER_PT_generate"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SD"
    bl_options = {"DEFAULT_CLOSED"}


class SDBLENDER_PT_texture(_SubPanel, bpy.types.Panel):
    """Whole-object textures: the prompt, model and control units above, views around the selection."""

    bl_idname = "SDBLENDER_PT_texture"
    bl_label = "Texture"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.sd_blender
        column = layout.column(align=True)
        column.prop(settings, "texture_strategy", text="")
        if settings.texture_strategy != "CAMERAS":
            column.prop(settings, "texture_views")
        column.prop(settings, "texture_mode", text="")
        column.prop(settings, "texture_size", text="")
        column.prop(settings, "texture_uv_map", icon="UV")
        row = layout.row(align=True)
        row.prop(settings, "texture_exponent")
        row.prop(settings, "texture_discard_angle")
        active = state.texture_batch.active
        if texture.texture_running():
            _draw_batch_progress(layout, active.batch, "sd_blender.cancel_texture")
            return
        layout.operator("sd_blender.generate_texture", icon="TEXTURE")
        if active is not None and active.outcome:
            layout.label(text=active.outcome)


class SDBLENDER_PT_animation(_SubPanel, bpy.types.Panel):
    """How Generate Frames makes frames follow each other (docs/animation.md)."""

    bl_idname = "SDBLENDER_PT_animation"
    bl_label = "Animation"

    def draw(self, context):
        settings = context.scene.sd_blender
        column = self.layout.column(align=True)
        column.prop(settings, "temporal_mode")
        warp = settings.temporal_mode in ("WARP", "FULL")
        if warp:
            column.prop(settings, "temporal_warp_strength")
            column.prop(settings, "temporal_match_colors")
        if settings.temporal_mode in ("ANCHOR", "FULL") or (warp and settings.temporal_match_colors):
            column.prop(settings, "temporal_anchor_every")  # the keyframes whose colours are matched


def _draw_preview(layout, snapshot):
    """The running work's latest preview (the image "SD Preview"), once it has one."""
    icon = preview_icon() if snapshot.preview is not None else None
    if icon is not None:
        layout.template_icon(icon_value=icon, scale=PREVIEW_SCALE)


def _draw_batch_progress(layout, batch, cancel_operator):
    """A background process's progress bar ("frame N of M: ..."), its cancel button and its
    latest preview."""
    snapshot = batch.snapshot()
    row = layout.row(align=True)
    row.progress(factor=snapshot.fraction, type="BAR", text=snapshot.message)
    row.operator(cancel_operator, text="", icon="CANCEL")
    _draw_preview(layout, snapshot)


def _draw_unit(layout, unit):
    column = layout.column(align=True)
    row = column.row(align=True)
    row.prop(unit, "model", text="", icon="NODE")
    row.operator("sd_blender.refresh_models", text="", icon="FILE_REFRESH")
    row = column.row(align=True)
    row.prop(unit, "weight")
    row.prop(unit, "start")
    row.prop(unit, "end")


class SDBLENDER_UL_control_units(bpy.types.UIList):
    def draw_item(self, context, layout, data, unit, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(unit, "enabled", text="")
        row.prop(unit, "kind", text="")
        row.label(text=unit.model or "server default")
        row.label(text=f"{unit.weight:.2f}")


class SDBLENDER_PT_passes(_SubPanel, bpy.types.Panel):
    """How the passes are drawn: depth range, OpenPose rigs, segmentation classes, img2img."""

    bl_idname = "SDBLENDER_PT_passes"
    bl_label = "Passes"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.sd_blender
        self._draw_depth_range(layout, context.scene, settings)
        row = layout.row(align=True)
        row.prop(settings, "lineart_threshold", text="Line art")
        row.prop(settings, "canny_threshold", text="Canny")
        self._draw_rigs(layout, context, settings)
        self._draw_segmentation(layout, context.object)
        layout.prop(settings, "use_color_init")
        if settings.use_color_init:
            layout.prop(settings, "init_strength")

    @staticmethod
    def _draw_depth_range(layout, scene, settings):
        column = layout.column(align=True)
        column.prop(settings, "depth_range_mode")
        if settings.depth_range_mode == "FIXED":
            row = column.row(align=True)
            row.prop(settings, "depth_near")
            row.prop(settings, "depth_far")
        elif settings.depth_range_mode == "SHOT":
            if settings.depth_shot_frames == depth_range.shot_frames(scene):
                column.label(text=f"{settings.depth_shot_near:.3g} to {settings.depth_shot_far:.3g} over frames "
                             f"{settings.depth_shot_frames}")
            else:
                column.label(text="measured at the next generation, or now:")
            column.operator("sd_blender.measure_shot_depth", icon="ARROW_LEFTRIGHT")

    @staticmethod
    def _draw_rigs(layout, context, settings):
        scene = context.scene
        column = layout.column(align=True)
        column.label(text="OpenPose", icon="ARMATURE_DATA")
        for armature in sorted((obj for obj in scene.objects if obj.type == "ARMATURE"), key=lambda obj: obj.name):
            column.label(text=f"{armature.name}: {pose.rig_preset_name(armature)}")
        column.prop(settings, "openpose_stick_scale")
        if context.object is not None and context.object.type == "ARMATURE":
            draw_keypoint_overrides(layout, context.object)

    @staticmethod
    def _draw_segmentation(layout, obj):
        if obj is None:
            return
        column = layout.column(align=True)
        column.label(text=f"Segmentation of {obj.name}", icon="COLOR")
        column.prop(obj, "sd_blender_seg_class", text="Object")
        material = obj.active_material
        if material is not None:
            column.prop(material, "sd_blender_seg_class", text=material.name)


CLASSES = (SDBLENDER_UL_control_units, SDBLENDER_PT_generate, SDBLENDER_PT_texture, SDBLENDER_PT_animation,
           SDBLENDER_PT_passes)
