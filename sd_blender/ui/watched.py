"""Work that runs away from the UI thread (a worker thread, a background process) and that a
timer on the UI thread watches: one piece at a time of each kind, kept after it ended so the
panel can show its outcome, its newest live preview shown in the image "SD Preview" while it runs.
The pieces of work themselves are runtime state (state.py)."""
import bpy

from ..scene.live_preview import show_preview


class Watched:
    """The current work of one kind: `active` (None, or an object with `outcome`, set once it
    ended, and `file_changed`), watched every `interval` seconds by the timer it was started with."""

    def __init__(self, interval):
        self.active = None
        self.interval = interval
        self._timer = None
        self._shown_preview = None  # the active work's preview in the image "SD Preview"

    def start(self, active, timer):
        """Watch `active` with `timer`, a bpy.app.timers callback that calls poll()."""
        self.active, self._timer, self._shown_preview = active, timer, None
        # Persistent: the work goes on (and its files are written) when another file is opened.
        bpy.app.timers.register(timer, first_interval=self.interval, persistent=True)

    def poll(self, snapshot_of, finish):
        """One tick of the timer: the seconds until the next, or None once the work has ended and
        finish(active, snapshot) has brought it into Blender and said how that went. The snapshot's
        newest `preview` goes into the image "SD Preview" first."""
        active = self.active
        if active is None:
            return None
        snapshot = snapshot_of(active)
        self._show_newest_preview(snapshot.preview, active.file_changed)
        redraw_sidebars()
        if not snapshot.finished:
            return self.interval
        active.outcome = finish(active, snapshot)
        print(f"sd_blender: {active.outcome}")
        return None

    def _show_newest_preview(self, preview, file_changed):
        """A preview not shown yet into "SD Preview" (not into another file opened meanwhile)."""
        if preview is self._shown_preview or file_changed:
            return
        show_preview(preview)
        self._shown_preview = preview
        for area in areas("IMAGE_EDITOR"):  # an editor showing "SD Preview" draws the new one at once
            area.tag_redraw()

    def file_opened(self):
        """Running work belongs to the file it started in; finished work is forgotten."""
        if self.active is None:
            return
        if self.active.outcome:
            self.active = None
        else:
            self.active.file_changed = True

    def stop_watching(self):
        if self._timer is not None and bpy.app.timers.is_registered(self._timer):
            bpy.app.timers.unregister(self._timer)


def batch_running(watched):
    """Whether the background process `watched` follows (an active with a `batch`) is still at work."""
    active = watched.active
    return active is not None and not active.batch.finished


def areas(area_type):
    """Every area of this type in every window."""
    for window in bpy.context.window_manager.windows:
        yield from (area for area in window.screen.areas if area.type == area_type)


def redraw_sidebars():
    for area in areas("VIEW_3D"):
        area.tag_redraw()
