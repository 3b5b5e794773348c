"""Per-scene generation settings, saved with the .blend."""
import bpy

from ..core.lineart import DEFAULT_THRESHOLD
from ..core.request import MAX_SIZE, MIN_SIZE, control_type_for_pass
from ..core.segmentation import ADE20K_CLASSES
from ..core.temporal import DEFAULT_WARP_STRENGTH
from ..scene.passes import PASSES
from ..scene.texturing import FusionOptions
from . import state

APPLY_TARGETS = (
    ("NONE", "Image only", "Open the result as an image; apply nothing"),
    ("BACKGROUND", "Camera background", "Show the result behind the scene through the camera"),
    ("TEXTURE", "Texture on selection", "Project the result from the camera onto the selected meshes (new UV map)"),
    ("MATERIAL", "Tileable material", "A seamless image that tiles, on the materials of the selected meshes through "
     "their UV maps (generated without control passes)"),
)

DEPTH_RANGE_MODES = (
    ("AUTO", "Auto per frame", "Nearest surface white, farthest dark, in every frame (stills)"),
    ("FIXED", "Fixed", "Your near and far distances, the same in every frame"),
    ("SHOT", "Shot", "One range measured over the scene's frame range, so animations do not flicker"),
)


TEXTURE_STRATEGIES = (
    ("ORBIT", "Orbit", "Views all around the selection, framed to fit it"),
    ("CAMERAS", "Cameras", "The selected cameras, as they are"),
    ("ACTIVE", "Active + unseen", "The scene camera first, then views that see what is still unseen"),
)
TEXTURE_MODES = (
    ("SEQUENTIAL", "Sequential", "View after view, each inpainting only what the views before it missed or saw badly"),
    ("SYNCHRONIZED", "Synchronized", "All views denoised together in one job, fused in texture space at every step"),
    ("INDEPENDENT", "Independent", "Each view generated alone, then fused (the baseline)"),
)
TEMPORAL_MODES = (  # the command line's --temporal, lowercased (core.temporal)
    ("FULL", "Full", "Each frame starts from the one before, warped by the scene's motion, and attends to an anchor frame"),
    ("ANCHOR", "Anchor", "Frames go in chunks whose attention also reads an anchor frame: style and colours stay"),
    ("WARP", "Warp", "Each frame starts from the one before, warped by the scene's motion; what was hidden is inpainted"),
    ("OFF", "Off", "Each frame on its own, from the same seed"),
)
TEXTURE_SIZES = tuple((str(size), f"{size} px", f"A {size} x {size} texture") for size in (512, 1024, 2048, 4096))


def _uv_map_names(settings, context, edit_text):
    """The UV maps of the selected meshes."""
    names = {layer.name for obj in context.selected_objects if obj.type == 'MESH' for layer in obj.data.uv_layers}
    return sorted(name for name in names if edit_text.lower() in name.lower())


def _controlnet_names(unit, context, edit_text):
    names = state.server_models.names(control_type_for_pass(unit.kind))
    return [name for name in names if edit_text.lower() in name.lower()]


def _with_families(named_families, edit_text):
    """Search candidates: (name, family shown beside it) for the names containing edit_text."""
    return [(name, family or "family unknown") for name, family in named_families if edit_text.lower() in name.lower()]


def _base_model_names(settings, context, edit_text):
    return _with_families(state.server_models.base_models(), edit_text)


def _scheduler_names(settings, context, edit_text):
    """The server's samplers, from its limits once fetched (Refresh)."""
    limits = state.server_models.limits or {}
    return [name for name in limits.get("schedulers", []) if edit_text.lower() in name]


def _lora_names(lora, context, edit_text):
    return _with_families(state.server_models.loras(), edit_text)


class SDBLENDER_PG_control_unit(bpy.types.PropertyGroup):
    """One ControlNet condition: which pass, which ControlNet, how strongly and when."""

    enabled: bpy.props.BoolProperty(name="Enabled", default=True)
    kind: bpy.props.EnumProperty(name="Pass", items=PASSES, default="depth")
    model: bpy.props.StringProperty(
        name="ControlNet",
        description="A ControlNet of the server (Refresh lists them); empty: the server's ControlNet for this pass",
        search=_controlnet_names,
    )
    # Soft ranges only where the server decides: its limits (GET /v1/limits) are checked before rendering.
    weight: bpy.props.FloatProperty(name="Weight", min=0.0, soft_max=2.0, default=1.0)
    start: bpy.props.FloatProperty(name="Start", min=0.0, max=1.0, default=0.0, subtype="FACTOR")
    end: bpy.props.FloatProperty(name="End", min=0.0, max=1.0, default=1.0, subtype="FACTOR")


class SDBLENDER_PG_lora(bpy.types.PropertyGroup):
    """One LoRA applied to the generation, and how strongly."""

    enabled: bpy.props.BoolProperty(name="Enabled", default=True)
    name: bpy.props.StringProperty(
        name="LoRA",
        description="A LoRA of the server (Refresh lists them with their family, which must be the model's)",
        search=_lora_names,
    )
    weight: bpy.props.FloatProperty(name="Weight", soft_min=-2.0, soft_max=2.0, default=1.0)


class SDBLENDER_PG_settings(bpy.types.PropertyGroup):
    prompt: bpy.props.StringProperty(name="Prompt", description="What to generate")
    negative_prompt: bpy.props.StringProperty(name="Negative prompt", description="What to avoid")
    base_model: bpy.props.StringProperty(
        name="Model",
        description="A base model of the server (Refresh lists them with their family); empty: the server's default",
        search=_base_model_names,
    )
    loras: bpy.props.CollectionProperty(type=SDBLENDER_PG_lora)
    use_random_seed: bpy.props.BoolProperty(
        name="Random seed", default=True, description="Let the server pick a seed (reported with the result)"
    )
    seed: bpy.props.IntProperty(name="Seed", min=0, default=0)
    steps: bpy.props.IntProperty(name="Steps", min=1, soft_max=150, default=20)
    use_previews: bpy.props.BoolProperty(
        name="Previews",
        description="Watch the image form: the server sends a small preview every few steps, shown under the "
        "progress bar and in the image \"SD Preview\"",
        default=True,
    )
    guidance_scale: bpy.props.FloatProperty(name="Guidance", min=0.0, max=30.0, default=7.5)
    scheduler: bpy.props.StringProperty(
        name="Sampler", default="unipc", search=_scheduler_names,
        description=(
            "A sampler of the server (Refresh lists them): unipc, euler_a, dpmpp_2m_karras, ...; "
            "lcm or tcd with an LCM, TCD or Hyper-SD LoRA: 4-8 steps, guidance 1-2"
        ),
    )
    num_images: bpy.props.IntProperty(name="Images", min=1, soft_max=8, default=1)
    use_scene_resolution: bpy.props.BoolProperty(
        name="Scene resolution", default=True, description="Generate at the scene's render resolution"
    )
    width: bpy.props.IntProperty(name="Width", min=MIN_SIZE, max=MAX_SIZE, default=512, step=8)
    height: bpy.props.IntProperty(name="Height", min=MIN_SIZE, max=MAX_SIZE, default=512, step=8)
    control_units: bpy.props.CollectionProperty(type=SDBLENDER_PG_control_unit)
    active_control_index: bpy.props.IntProperty(name="Active control unit", min=0)
    guess_mode: bpy.props.BoolProperty(
        name="Guess mode",
        description="ControlNet guess mode: the controls shape the image even without a prompt "
        "(a guidance of 3 to 5 works best)",
    )
    depth_range_mode: bpy.props.EnumProperty(name="Depth range", items=DEPTH_RANGE_MODES, default="AUTO")
    depth_near: bpy.props.FloatProperty(
        name="Near", min=1e-4, default=1.0, unit="LENGTH", description="Distance drawn white (fixed range)"
    )
    depth_far: bpy.props.FloatProperty(
        name="Far", min=1e-4, default=100.0, unit="LENGTH", description="Distance drawn darkest (fixed range)"
    )
    depth_shot_near: bpy.props.FloatProperty(name="Shot near", unit="LENGTH", options={"HIDDEN"})
    depth_shot_far: bpy.props.FloatProperty(name="Shot far", unit="LENGTH", options={"HIDDEN"})
    depth_shot_frames: bpy.props.StringProperty(
        name="Measured frames", description="The frame range the shot's depth range was measured over"
    )
    lineart_threshold: bpy.props.FloatProperty(
        name="Line art threshold", min=0.01, max=1.0, default=DEFAULT_THRESHOLD, subtype="FACTOR",
        description="Edge strength a line needs: 0.5 draws creases from 45 degrees and 5 % depth jumps",
    )
    canny_threshold: bpy.props.FloatProperty(
        name="Canny threshold", min=0.01, max=1.0, default=DEFAULT_THRESHOLD, subtype="FACTOR",
        description="Edge strength a line of the canny pass needs: lower draws more lines",
    )
    openpose_stick_scale: bpy.props.FloatProperty(
        name="Stick scale",
        min=0.25,
        max=8.0,
        default=1.0,
        description="Thickness of the OpenPose sticks and joints: 1 for SD 1.5 ControlNets; "
        "SDXL OpenPose ControlNets expect thicker ones at 1024 px",
    )
    use_color_init: bpy.props.BoolProperty(
        name="Start from the render",
        description="img2img: start from the colour pass (the scene's own render) instead of noise",
    )
    init_strength: bpy.props.FloatProperty(
        name="Strength", min=0.01, max=1.0, default=0.75, subtype="FACTOR",
        description="How much of the render is repainted: 1 ignores it, small values keep it",
    )
    apply_to: bpy.props.EnumProperty(name="Apply as", items=APPLY_TARGETS, default="BACKGROUND")
    temporal_mode: bpy.props.EnumProperty(name="Temporal", items=TEMPORAL_MODES, default="FULL")
    temporal_anchor_every: bpy.props.IntProperty(
        name="Keyframe every", min=0, soft_max=120, default=0,
        description="Anchor frames: 0 anchors every frame to the first frame of the range; K makes a keyframe "
        "every K frames, each anchoring the frames up to the next",
    )
    temporal_warp_strength: bpy.props.FloatProperty(
        name="Warp strength", min=0.05, max=1.0, default=DEFAULT_WARP_STRENGTH, subtype="FACTOR",
        description="How much of the frame before, warped into this one, is repainted: low keeps it steady, "
        "high follows the prompt and the controls more",
    )
    temporal_match_colors: bpy.props.BoolProperty(
        name="Match anchor colours",
        description="Warp and Full: move each frame's start to the anchor frame's colour mean and spread, "
        "against slow colour drift",
    )
    texture_views: bpy.props.IntProperty(name="Views", min=1, max=32, default=8,
                                         description="How many views (Orbit and Active + unseen)")
    texture_strategy: bpy.props.EnumProperty(name="Views", items=TEXTURE_STRATEGIES, default="ORBIT")
    texture_mode: bpy.props.EnumProperty(name="Mode", items=TEXTURE_MODES, default="SEQUENTIAL")
    texture_size: bpy.props.EnumProperty(name="Texture size", items=TEXTURE_SIZES, default="2048")
    texture_exponent: bpy.props.FloatProperty(
        name="Angle falloff", min=0.0, soft_max=8.0, default=FusionOptions.exponent,
        description="p of the views' weights cos^p per texel: higher favours the view that sees a spot square on",
    )
    texture_discard_angle: bpy.props.FloatProperty(
        name="Discard angle", min=1.0, max=90.0, default=FusionOptions.discard_angle,
        description="Views seeing a spot more obliquely than this (degrees) do not count for it",
    )
    texture_uv_map: bpy.props.StringProperty(
        name="UV map", search=_uv_map_names,
        description="The UV map to bake into; empty: the active one when its islands are apart, else a new 'SD Bake'",
    )


def _segmentation_classes(owner, context, edit_text):
    return [name for name in ADE20K_CLASSES if edit_text.lower() in name]


def _segmentation_class_property(owner_name):
    return bpy.props.StringProperty(
        name="ADE20K class",
        description=f"The class this {owner_name} is painted as in the segmentation pass; empty: guessed from names",
        search=_segmentation_classes,
    )


CLASSES = (SDBLENDER_PG_control_unit, SDBLENDER_PG_lora, SDBLENDER_PG_settings)


def register_properties():
    bpy.types.Scene.sd_blender = bpy.props.PointerProperty(type=SDBLENDER_PG_settings)
    bpy.types.Object.sd_blender_seg_class = _segmentation_class_property("object")
    bpy.types.Material.sd_blender_seg_class = _segmentation_class_property("material")


def unregister_properties():
    del bpy.types.Material.sd_blender_seg_class
    del bpy.types.Object.sd_blender_seg_class
    del bpy.types.Scene.sd_blender
