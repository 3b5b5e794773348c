"""The scene layer: reads the scene, renders the control passes, applies results and saves the
file (bpy). It imports the core, never the user interface."""
