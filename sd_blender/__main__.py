"""`python -m sd_blender passes|generate ...` with the bpy module (see ui/cli.py)."""
import sys

from . import register, unregister
from .ui import cli

register()
try:
    status = cli.run(sys.argv[1:])
finally:
    unregister()  # the bpy module crashes at exit while add-on classes are still registered
sys.exit(status)
