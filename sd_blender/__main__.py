"""`python -m sd_blender passes|generate ...` with the bpy module (see cli.py)."""
import sys

from . import cli, register

register()
sys.exit(cli.run(sys.argv[1:]))
