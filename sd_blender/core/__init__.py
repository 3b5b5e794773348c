"""The pure core of the add-on: numpy and the standard library only, never bpy.

Everything here is unit-tested in plain Python (tests/core).
"""
