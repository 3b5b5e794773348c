"""The core must run in plain Python: no bpy, nothing beyond numpy and the standard library."""
import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "sd_blender" / "core"
ALLOWED_THIRD_PARTY = {"numpy"}


def test_core_imports_only_stdlib_and_numpy():
    import sys

    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{path.name} imports {name}"
