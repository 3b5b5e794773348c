"""The sidebar tab "SD" in the 3D Viewport."""
import bpy

from . import operators
from .properties import generation_size


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
        self._draw_sampling(layout, settings)
        self._draw_size(layout, context.scene, settings)
        self._draw_controls(layout, settings)
        layout.prop(settings, "apply_to")
        self._draw_progress(layout)

    @staticmethod
    def _draw_sampling(layout, settings):
        column = layout.column(align=True)
        row = column.row(align=True)
        row.prop(settings, "use_random_seed", text="", icon="FILE_REFRESH")
        seed = row.row(align=True)
        seed.enabled = not settings.use_random_seed
        seed.prop(settings, "seed")
        column.prop(settings, "steps")
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
        box.prop(settings, "use_depth")
        if settings.use_depth:
            row = box.row(align=True)
            row.prop(settings, "depth_weight")
            row.prop(settings, "depth_start")
            row.prop(settings, "depth_end")
        box.operator("sd_blender.preview_passes", icon="IMAGE_ZDEPTH")

    @staticmethod
    def _draw_progress(layout):
        active = operators.current_generation()
        if operators.is_running():
            snapshot = active.job.snapshot()
            row = layout.row(align=True)
            row.progress(factor=snapshot.fraction, type="BAR", text=snapshot.message or snapshot.state)
            row.operator("sd_blender.cancel", text="", icon="CANCEL")
            return
        layout.operator("sd_blender.generate", icon="RENDER_STILL")
        if active is not None and active.outcome:
            layout.label(text=active.outcome)
            if active.job.snapshot().result_paths:
                row = layout.row(align=True)
                row.operator("sd_blender.apply_result", text="Background").target = "BACKGROUND"
                row.operator("sd_blender.apply_result", text="Texture").target = "TEXTURE"


CLASSES = (SDBLENDER_PT_generate,)
