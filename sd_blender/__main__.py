"""`python -m sd_blender passes|generate ...` with the bpy module (see cli.py)."""
import sys

from . import cli, register, unregister

register()
try:
    status = cli.run(sys.argv[1:])
finally:
    unregister()  # the bpy module crashes at exit while add-on classes are still registered
sys.exit(status)
