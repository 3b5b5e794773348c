"""sd_blender's GPU server: ControlNet-conditioned Stable Diffusion behind an HTTP job API."""

__version__ = "0.1.0"
