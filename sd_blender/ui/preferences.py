"""Add-on preferences: where the server is."""
import bpy

from ..core.client import DEFAULT_SERVER_URL

ADDON_PACKAGE = __package__.rpartition(".")[0]  # the add-on's package: sd_blender, or bl_ext.<repo>.sd_blender


class SDBLENDER_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    server_url: bpy.props.StringProperty(
        name="Server URL",
        description="Address of the sd_blender server (run `sd-blender-server` on a GPU machine)",
        default=DEFAULT_SERVER_URL,
    )
    token: bpy.props.StringProperty(
        name="API token",
        description="Sent as a bearer token when set (the server's --token)",
        subtype="PASSWORD",
    )

    def draw(self, context):
        self.layout.prop(self, "server_url")
        self.layout.prop(self, "token")


def server_settings(context):
    """(url, token): the preferences when the add-on is enabled, else the defaults."""
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    if addon is None:
        return DEFAULT_SERVER_URL, ""
    return addon.preferences.server_url, addon.preferences.token


CLASSES = (SDBLENDER_AP_preferences,)
