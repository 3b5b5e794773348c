"""The latest preview of a running generation (or of a background batch's job) in the image
"SD Preview": any Image Editor can show it, and the panel draws its thumbnail under the progress
bar."""
import bpy

from .passes import image_of_pixels

PREVIEW_IMAGE = "SD Preview"


def show_preview(preview):
    """The image "SD Preview" holding a job's preview (core.job.Preview), its thumbnail marked for
    redrawing; returns the image."""
    image = image_of_pixels(PREVIEW_IMAGE, preview.pixels, "sRGB")
    image.preview_ensure().reload()
    return image


def preview_icon():
    """The icon id of the image "SD Preview"'s thumbnail; None while there is no such image."""
    image = bpy.data.images.get(PREVIEW_IMAGE)
    return None if image is None or image.preview is None else image.preview.icon_id
