"""Saving the open .blend whole or not at all (core/files.py). Blender 5.0 reports a save that a
full disk cut short as done, so the copy is saved under a temporary name, checked, and renamed
into place only when whole."""
import os

import bpy

from ..core.files import is_whole_blend, partial_path, remove_if_there


def save_copy_whole(path):
    """Save a copy of the open file at path (the open file keeps its own path). Raises OSError,
    leaving a file already at path as it was, when the copy could not be saved whole."""
    partial = partial_path(path)
    try:
        bpy.ops.wm.save_as_mainfile(filepath=partial, copy=True)
        problem = None if is_whole_blend(partial) else "the file Blender wrote is incomplete"
    except RuntimeError as error:
        problem = f"Blender: {str(error).strip()}"
    if problem is None:
        os.replace(partial, path)
        return
    for leftover in (partial, partial + "@"):  # Blender writes PATH@, then renames it to PATH
        remove_if_there(leftover)
    raise OSError(f"could not save {path} ({problem}); a file already there is kept as it was: "
                  "is the disk full, or the folder not writable?")
