"""Generate Texture: the selected meshes textured all around by a background Blender process (the
command line's `texture`, docs/texturing.md), watched by a timer on the UI thread that shows
"view N of M" and, when it is done, the baked textures on the objects."""
from dataclasses import dataclass

import bpy

from ..core.frame_batch import DONE, FrameBatch
from ..scene.texels import TexturingError
from ..scene.texture_batch import show_textures, start_texture, texture_objects, texture_problem
from . import frames, operators, state
from .preferences import server_settings
from .watched import batch_running


@dataclass
class ActiveTexture:
    batch: FrameBatch
    report_path: str
    outcome: str = ""
    file_changed: bool = False  # another file was opened meanwhile: the textures are kept, not shown


def poll_texture():
    """bpy.app.timers callback: None stops the timer."""
    return state.texture_batch.poll(lambda active: active.batch.snapshot(), finish_texture)


def texture_running():
    return batch_running(state.texture_batch)


def finish_texture(active, snapshot):
    """Show the finished textures on their objects (UI thread). Returns a one-line outcome."""
    if snapshot.state != DONE:
        return snapshot.message
    if active.file_changed:
        return f"{snapshot.message}; not shown: another file was opened while they ran"
    try:
        shown = show_textures(active.report_path)
    except TexturingError as error:
        return f"{snapshot.message}; not shown: {error}"
    return f"{snapshot.message}; textured {', '.join(shown) or 'nothing'} (report: {active.report_path})"


def _busy():
    return operators.is_running() or frames.frames_running() or texture_running()


class SDBLENDER_OT_generate_texture(bpy.types.Operator):
    """Texture the selected meshes all around: views generated on the server, fused and baked into
    their UV maps, in the background"""

    bl_idname = "sd_blender.generate_texture"
    bl_label = "Generate Texture"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not _busy()

    def execute(self, context):
        scene = context.scene
        objects = texture_objects(context)
        problem = texture_problem(scene, objects)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        url, token = server_settings(context)
        try:
            batch, report_path = start_texture(scene, objects, url, token)
        except ValueError as error:  # TexturingError among them
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except OSError as error:
            self.report({"ERROR"}, f"could not start the background Blender for the texture: {error}")
            return {"CANCELLED"}
        state.texture_batch.start(ActiveTexture(batch, report_path), poll_texture)
        self.report({"INFO"}, f"texturing {', '.join(obj.name for obj in objects)} on {url} from a background process")
        return {"FINISHED"}


class SDBLENDER_OT_cancel_texture(bpy.types.Operator):
    """Stop texturing (the view in progress is cancelled on the server)"""

    bl_idname = "sd_blender.cancel_texture"
    bl_label = "Cancel Texture"

    @classmethod
    def poll(cls, context):
        return texture_running()

    def execute(self, context):
        state.texture_batch.active.batch.cancel()
        return {"FINISHED"}


CLASSES = (SDBLENDER_OT_generate_texture, SDBLENDER_OT_cancel_texture)
