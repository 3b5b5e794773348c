"""The shape of the code: no import cycles in the add-on or the server, and the add-on's layers
import only downwards (ui → scene → core; the core never imports bpy). Read from the source
with ast, so a test fails the day an import breaks the rule, whatever runs."""
import ast

import pytest

from conftest import REPO_ROOT

PACKAGES = {"sd_blender": REPO_ROOT / "sd_blender", "sd_blender_server": REPO_ROOT / "server" / "sd_blender_server"}
BLENDER_MODULES = {"bpy", "mathutils", "bmesh", "gpu", "addon_utils"}
LAYERS = ("sd_blender.core", "sd_blender.scene", "sd_blender.ui")  # lowest first


def module_names(package):
    root = PACKAGES[package]
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_of(name, path, known):
    """The modules `name` imports, anywhere in the file (function-level imports count too)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return found


def graph(package):
    modules = dict(module_names(package))
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(edges):
    """A list of modules forming an import cycle, or None."""
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            return visiting[visiting.index(module):] + [module]
        if module in done or module not in edges:
            return None
        visiting.append(module)
        for imported in sorted(edges[module]):
            cycle = visit(imported)
            if cycle:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(edges):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_there_is_no_import_cycle(package):
    cycle = find_cycle(graph(package))
    assert cycle is None, " -> ".join(cycle)


def layer_of(module):
    return next((index for index, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")), None)


def test_each_layer_imports_only_the_layers_below_it():
    for module, imported in graph("sd_blender").items():
        layer = layer_of(module)
        if layer is None:
            continue  # the package's entry points (register, python -m) use every layer
        for other in imported:
            other_layer = layer_of(other)
            assert other_layer is None or other_layer <= layer, f"{module} imports {other}, a layer above it"
            if layer == 0:
                assert other.split(".")[0] not in BLENDER_MODULES, f"{module} (core) imports {other}"


def test_the_checks_see_a_cycle_and_a_layer_broken():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("sd_blender.scene.passes") == 1 and layer_of("sd_blender.core") == 0 and layer_of("sd_blender") is None
    edges = graph("sd_blender")
    assert "sd_blender.scene.passes" in edges["sd_blender.ui.operators"]  # relative imports are resolved
    assert "sd_blender.core.files" in edges["sd_blender.core.job"]
