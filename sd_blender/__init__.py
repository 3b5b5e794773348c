"""sd_blender: ControlNet-conditioned Stable Diffusion from exact scene passes.

Three layers, each importing only those below it (docs/development.md): `ui` (the panel,
operators, properties, preferences, runtime state, the command line) → `scene` (reading the
scene, rendering passes, applying results, saving: bpy) → `core` (pure Python + numpy).
"""
import bpy

from .ui import cli, frames, keypoint_overrides, operators, panels, preferences, properties, state, texture

_CLASSES = (
    preferences.CLASSES + properties.CLASSES + keypoint_overrides.CLASSES + operators.CLASSES + frames.CLASSES
    + texture.CLASSES + panels.CLASSES
)
_cli_handle = None


def _cli_command(argv):
    return cli.run(argv)


def register():
    global _cli_handle
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    keypoint_overrides.register_properties()
    state.register_handlers()
    _cli_handle = bpy.utils.register_cli_command("sd_blender", _cli_command)


def unregister():
    global _cli_handle
    state.unregister_handlers()
    bpy.utils.unregister_cli_command(_cli_handle)
    _cli_handle = None
    keypoint_overrides.unregister_properties()
    properties.unregister_properties()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
