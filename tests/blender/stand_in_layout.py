"""A stand-in for Blender's UILayout: background Blender has no window, so no real layout exists.
Panels draw into it; it records what they draw and fails, as Blender would when drawing, on a
property, operator or operator property that does not exist."""
import bpy


class CheckingLayout:
    """Records what a panel draws and fails on a property or operator Blender would not find."""

    def __init__(self, drawn):
        self.drawn = drawn
        self.enabled = True

    def _child(self, *args, **kwargs):
        return CheckingLayout(self.drawn)

    row = column = box = split = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{data!r} has no property {name}"
        self.drawn.append(("prop", name))

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        assert name in data.bl_rna.properties and search_name in search_data.bl_rna.properties
        self.drawn.append(("prop_search", name))

    def operator(self, idname, **kwargs):
        properties = CheckingOperatorProperties(idname)  # fails for an operator that is not registered
        self.drawn.append(("operator", idname))
        return properties

    def operator_menu_enum(self, idname, property_name, **kwargs):
        assert property_name in operator_property_names(idname), f"{idname} has no property {property_name}"
        self.operator(idname)

    def template_list(self, list_type, list_id, data, name, active_data, active_name, **kwargs):
        assert hasattr(bpy.types, list_type), list_type
        assert name in data.bl_rna.properties and active_name in active_data.bl_rna.properties
        self.drawn.append(("list", name))

    def label(self, text="", **kwargs):
        self.drawn.append(("label", text))

    def progress(self, **kwargs):
        self.drawn.append(("progress", kwargs.get("text")))

    def template_icon(self, icon_value, scale=1.0):
        assert isinstance(icon_value, int), f"an icon id is an int, not {icon_value!r}"  # 0 in background Blender
        self.drawn.append(("icon", icon_value))


def operator_property_names(idname):
    """The operator's properties, from its RNA (bpy.ops answers any name, registered or not)."""
    module, name = idname.split(".")
    try:
        rna = getattr(getattr(bpy.ops, module), name).get_rna_type()
    except KeyError:
        raise AssertionError(f"no operator {idname}") from None
    return {prop.identifier for prop in rna.properties}


class CheckingOperatorProperties:
    """What layout.operator() returns: setting a property the operator does not have fails, as in Blender."""

    def __init__(self, idname):
        object.__setattr__(self, "_names", operator_property_names(idname))
        object.__setattr__(self, "_idname", idname)

    def __setattr__(self, name, value):
        assert name in self._names, f"{self._idname} has no property {name}"


def draw(panel_class):
    """Run the panel's draw with the stand-in layout; returns what it drew."""
    drawn = []

    class StandIn:
        layout = CheckingLayout(drawn)

        def __getattr__(self, name):
            return getattr(panel_class, name)

    panel_class.draw(StandIn(), bpy.context)
    return drawn
