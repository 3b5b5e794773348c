"""sd_blender: ControlNet-conditioned Stable Diffusion from exact scene passes.

The thin Blender layer (operators, panel, properties, passes, applying results) around a pure
core (sd_blender.core) that never imports bpy.
"""
import bpy

from . import cli, frames, operators, panels, pose, preferences, properties, watched

_CLASSES = (
    preferences.CLASSES + properties.CLASSES + pose.CLASSES + operators.CLASSES + frames.CLASSES + panels.CLASSES
)
_cli_handle = None


def _cli_command(argv):
    return cli.run(argv)


def register():
    global _cli_handle
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    pose.register_properties()
    watched.register_handlers()
    _cli_handle = bpy.utils.register_cli_command("sd_blender", _cli_command)


def unregister():
    global _cli_handle
    watched.unregister_handlers()
    bpy.utils.unregister_cli_command(_cli_handle)
    _cli_handle = None
    pose.unregister_properties()
    properties.unregister_properties()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
