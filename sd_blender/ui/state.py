"""The add-on's runtime state, owned here alone: the server's model list, the running (or last)
generation and frame batch. Panels, properties and operators read it from here; tests reset it
here. Settings saved with the .blend are not runtime state: they live on the scene."""
import bpy

from ..core.model_list import ModelList
from .watched import Watched

server_models = ModelList()  # the server's models, for the search lists of the model, LoRA and ControlNet fields
generation = Watched(interval=0.2)  # Generate: an operators.ActiveGeneration
frame_batch = Watched(interval=0.5)  # Generate Frames: a frames.ActiveFrames
texture_batch = Watched(interval=0.5)  # Generate Texture: a texture.ActiveTexture
_WATCHED = (generation, frame_batch, texture_batch)


def reset():
    """Forget everything, as a fresh Blender session starts."""
    global server_models
    stop_watching()
    server_models = ModelList()
    for watched in _WATCHED:
        watched.active = None


def stop_watching():
    for watched in _WATCHED:
        watched.stop_watching()


@bpy.app.handlers.persistent
def _file_opened(*_args):
    for watched in _WATCHED:
        watched.file_opened()


def register_handlers():
    bpy.app.handlers.load_post.append(_file_opened)


def unregister_handlers():
    stop_watching()
    if _file_opened in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_file_opened)
