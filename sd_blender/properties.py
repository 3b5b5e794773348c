"""Per-scene generation settings, saved with the .blend."""
import bpy

from .core.request import MAX_SIZE, MIN_SIZE, round_to_multiple_of_8

SCHEDULERS = (
    ("unipc", "UniPC", "UniPC multistep"),
    ("euler_a", "Euler a", "Euler ancestral"),
    ("euler", "Euler", "Euler"),
    ("dpmpp_2m", "DPM++ 2M", "DPM-Solver++ 2M"),
    ("dpmpp_2m_karras", "DPM++ 2M Karras", "DPM-Solver++ 2M with Karras sigmas"),
    ("ddim", "DDIM", "DDIM"),
    ("pndm", "PNDM", "PNDM"),
    ("lms", "LMS", "LMS"),
    ("heun", "Heun", "Heun"),
)

APPLY_TARGETS = (
    ("NONE", "Image only", "Open the result as an image; apply nothing"),
    ("BACKGROUND", "Camera background", "Show the result behind the scene through the camera"),
    ("TEXTURE", "Texture on selection", "Project the result from the camera onto the selected meshes (new UV map)"),
)


class SDBLENDER_PG_settings(bpy.types.PropertyGroup):
    prompt: bpy.props.StringProperty(name="Prompt", description="What to generate")
    negative_prompt: bpy.props.StringProperty(name="Negative prompt", description="What to avoid")
    use_random_seed: bpy.props.BoolProperty(
        name="Random seed", default=True, description="Let the server pick a seed (reported with the result)"
    )
    seed: bpy.props.IntProperty(name="Seed", min=0, default=0)
    steps: bpy.props.IntProperty(name="Steps", min=1, max=150, default=20)
    guidance_scale: bpy.props.FloatProperty(name="Guidance", min=0.0, max=30.0, default=7.5)
    scheduler: bpy.props.EnumProperty(name="Sampler", items=SCHEDULERS, default="unipc")
    num_images: bpy.props.IntProperty(name="Images", min=1, max=8, default=1)
    use_scene_resolution: bpy.props.BoolProperty(
        name="Scene resolution", default=True, description="Generate at the scene's render resolution"
    )
    width: bpy.props.IntProperty(name="Width", min=MIN_SIZE, max=MAX_SIZE, default=512, step=8)
    height: bpy.props.IntProperty(name="Height", min=MIN_SIZE, max=MAX_SIZE, default=512, step=8)
    use_depth: bpy.props.BoolProperty(name="Depth", default=True, description="Condition on the exact depth pass")
    depth_weight: bpy.props.FloatProperty(name="Weight", min=0.0, max=2.0, default=1.0)
    depth_start: bpy.props.FloatProperty(name="Start", min=0.0, max=1.0, default=0.0, subtype="FACTOR")
    depth_end: bpy.props.FloatProperty(name="End", min=0.0, max=1.0, default=1.0, subtype="FACTOR")
    apply_to: bpy.props.EnumProperty(name="Apply as", items=APPLY_TARGETS, default="BACKGROUND")


def generation_size(scene):
    """(width, height) of passes and generation: both rounded to a multiple of 8."""
    settings = scene.sd_blender
    if settings.use_scene_resolution:
        scale = scene.render.resolution_percentage / 100.0
        width, height = scene.render.resolution_x * scale, scene.render.resolution_y * scale
    else:
        width, height = settings.width, settings.height
    return round_to_multiple_of_8(width), round_to_multiple_of_8(height)


CLASSES = (SDBLENDER_PG_settings,)


def register_properties():
    bpy.types.Scene.sd_blender = bpy.props.PointerProperty(type=SDBLENDER_PG_settings)


def unregister_properties():
    del bpy.types.Scene.sd_blender
