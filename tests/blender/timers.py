"""Background Blender has no event loop: these call the add-on's registered timers as Blender
would, until the watched work has ended."""
import time

import bpy

from sd_blender.ui import frames, operators, state


def run_timer_until_done(timeout=120):
    """Generate's timer, until the job has ended; returns the generation."""
    assert bpy.app.timers.is_registered(operators.poll_generation)
    deadline = time.monotonic() + timeout
    while operators.poll_generation() is not None:
        assert time.monotonic() < deadline, "generation did not finish"
        time.sleep(0.05)
    bpy.app.timers.unregister(operators.poll_generation)
    return state.generation.active


def run_frames_timer_until_done(timeout=240):
    """Generate Frames' timer, until the batch has ended; returns the batch's record."""
    assert bpy.app.timers.is_registered(frames.poll_frames)
    deadline = time.monotonic() + timeout
    while frames.poll_frames() is not None:
        assert time.monotonic() < deadline, state.frame_batch.active.batch.snapshot()
        time.sleep(0.1)
    bpy.app.timers.unregister(frames.poll_frames)
    return state.frame_batch.active
